// hotload for scripts: the same operations as the CLI, typed. The CLI is a thin
// layer over this module.
//
//   import { attach, revert, status, rollout, loadPlan } from '@hotload/api';
//   const r = attach(pid, 'fix.so');                 // synchronous; throws HotloadError
//   console.log(r.functions, r.timings.maxStopMs);
//   const { plan, baseDir } = loadPlan('rollout.json');
//   const res = await rollout(plan, { baseDir, onEvent: (e) => console.log(e) });
//   if (res.outcome !== 'success') process.exitCode = 1;
//
// Every failure is a HotloadError with a code, a message and a hint; a bad
// argument (a pid given as text, a misspelt option) is one too (USAGE): each
// function here checks its arguments first (args.ts).
export { attach, checkAttach, revert, status, ps, resolveTargets, parsePid, pidsByName, pidsByExe, pidsByBuildId } from './args';
export type { AttachOptions, AttachResult, PatchedFunction, ActiveFunction, RevertResult, RevertOptions, RevertedFunction, StatusResult, StatusFunction, StatusPatch, PatchableProcess } from '@hotload/injector';
export { mkpatch, mkpatchFromBuilds, findProgram, diffBuilds } from './args';
export type { MkpatchOptions, MkpatchResult, RebuildOptions, RebuildResult, BuildDiff, PatchPlan, PlannedFunction, PatchTarget } from '@hotload/patch';
export { HotloadError, isHotloadError, ERRORS, EXIT } from '@hotload/errors';
export type { ErrorCode } from '@hotload/errors';
export { rollout, loadPlan, validatePlan, planTargets } from './args';
export type { RolloutPlan, RolloutResult, RolloutOptions, RolloutEvent, ProcessResult, ProcessStatus, Step, CheckStep, HealthCheck, HealthCheckFunction } from './rollout';
export { watch } from './args';
export type { WatchOptions, WatchEvent, WatchSummary } from './watch';
