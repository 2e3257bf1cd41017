// @hotload/injector: sessions on a live process (the only package that talks to
// the native shim), and the jobs done on one: attach, revert, status.
export { attach, AttachOptions, AttachResult, PatchedFunction, findTargetModule, readSite } from './attach';
export { Session } from './session';
export { readMaps, modules, processExists, Module, Mapping } from './read-process';
export { shimPath } from './native';
