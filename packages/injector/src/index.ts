// @hotload/injector: sessions on a live process (the only package that talks to
// the native shim), and the jobs done on one: attach, revert, status.
export { attach, checkAttach } from './attach';
export { cleanStaged } from './stage-patch';
export type { AttachOptions, AttachResult, PatchedFunction } from './attach';
export type { ActiveFunction } from './active';
export { revert } from './revert';
export type { RevertResult, RevertOptions, RevertedFunction } from './revert';
export { status } from './status';
export type { StatusResult, StatusFunction, StatusPatch } from './status';
export { Session } from './session';
export { readMaps, modules, processExists, findTargetModule } from './read-process';
export type { Module, Mapping } from './read-process';
export { shimPath } from './native';
export { ps, pidsByName, pidsByExe, pidsByBuildId, resolveTargets, parsePid } from './ps';
export type { PatchableProcess } from './ps';
