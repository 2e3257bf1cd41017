// @hotload/patch: patch metadata, building patches, checking them against a target.
export * from './read-patch';
export * from './check-patch';
export * from './make-patch';
export * from './build';
export * from './object-files';
export * from './diff-builds';
export { compareLayouts } from './layouts';
export * from './rebuild-format';
export * from './rebuild-asm';
export * from './rebuild-patch';
export { refuseIfNotRunning, differencesFromTarget } from './running-build';
export * from './run-program';
