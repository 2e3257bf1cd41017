// @hotload/injector: sessions on a live process (the only package that talks to
// the native shim), and the jobs done on one: attach, revert, status.
export { attach, AttachOptions, AttachResult, PatchedFunction } from './attach';
export { revert, RevertResult } from './revert';
export { status, StatusResult } from './status';
export { Session } from './session';
export { readMaps, modules, processExists, findTargetModule, Module, Mapping } from './read-process';
export { shimPath } from './native';
export { ps, PatchableProcess, pidsByName, pidsByExe, pidsByBuildId, resolveTargets } from './ps';
export { RevertOptions } from './revert';
