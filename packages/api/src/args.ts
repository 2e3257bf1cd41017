// The API's door: every function a script calls checks its arguments here
// first. A script in JavaScript (or TypeScript through `any`) can pass
// anything, and what the layers below make of a wrong type is a confusing
// error or a wrong answer: a pid given as the string "22710" reached ffi-rs,
// which threw its own `NumberExpected`, and `status("22710")` answered "no
// process with pid 22710" about a process that runs. Here a bad argument is a
// HotloadError (USAGE) naming the function, the argument and what it takes,
// every problem at once (an unknown option too: a misspelt option would
// otherwise be ignored). Plans are checked by validatePlan (PLAN_INVALID),
// as the CLI checks a plan file.
//
// Each options schema lists every key of its options type (the compiler keeps
// the two in step), so an option added to a type must be added here too.
import { HotloadError } from '@hotload/errors';
import * as injector from '@hotload/injector';
import type { AttachOptions, RevertOptions } from '@hotload/injector';
import * as patch from '@hotload/patch';
import type { MkpatchOptions, RebuildOptions } from '@hotload/patch';
import * as plans from './rollout';
import type { RolloutOptions } from './rollout';
import * as watching from './watch';
import type { WatchOptions } from './watch';

/** What is wrong with a value, as "must be ...", or undefined when it is fine. */
type Check = (v: unknown) => string | undefined;

/** The largest pid Linux hands out (PID_MAX_LIMIT on 64-bit), as parsePid has it. */
const PID_MAX = 4194304;

const is = (ok: (v: unknown) => boolean, what: string): Check => (v) => (ok(v) ? undefined : `must be ${what}`);
const pid = is((v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= PID_MAX, `a process id (a whole number from 1 to ${PID_MAX}; parsePid() reads one from text)`);
const text = is((v) => typeof v === 'string' && v.length > 0, 'a non-empty string');
const flag = is((v) => typeof v === 'boolean', 'true or false');
const ms = is((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0, 'a number of milliseconds (0 or more)');
const count = is((v) => Number.isInteger(v) && (v as number) >= 1, 'a whole number (1 or more)');
const fn = is((v) => typeof v === 'function', 'a function');
const texts = is((v) => Array.isArray(v) && v.every((x) => typeof x === 'string' && x.length > 0), 'an array of non-empty strings');
const someTexts = is((v) => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x.length > 0), 'a non-empty array of non-empty strings');
const pids = is((v) => Array.isArray(v) && v.length > 0 && v.every((x) => pid(x) === undefined), 'a non-empty array of process ids (whole numbers)');
const textMap = is((v) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string'), 'an object of strings');
const signal = is((v) => typeof v === 'object' && v !== null && typeof (v as AbortSignal).aborted === 'boolean' && typeof (v as AbortSignal).addEventListener === 'function', 'an AbortSignal');
const textSet = is((v) => v instanceof Set && [...v].every((x) => typeof x === 'string'), 'a Set of strings');
const anything: Check = () => undefined;
const pidOrText: Check = (v) => (typeof v === 'number' ? pid(v) : text(v) && `must be a pid, pids separated by commas, or a process name`);

/** An argument that may be left out (or given as undefined). */
const optional = (c: Check): Check & { optional: true } => Object.assign((v: unknown) => (v === undefined ? undefined : c(v)), { optional: true as const });
/** A field of an options object: required unless wrapped in optional(). */
type Schema<T> = { [K in keyof Required<T>]: Check };

/** Checks an options object: an object (or left out when `optional`), no unknown key, each field. */
function options<T>(schema: Schema<T>, required = false): Check & { optional?: true; fields: (v: unknown, name: string) => string[] } {
  const fields = (v: unknown, name: string): string[] => {
    if (v === undefined && !required) return [];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return [`${name} must be an object (${describe(v)})`];
    const problems: string[] = [];
    const known = Object.keys(schema) as (keyof T & string)[];
    for (const k of Object.keys(v)) if (!(k in schema)) problems.push(`${name} has an unknown option "${k}" (known: ${known.join(', ')})`);
    for (const k of known) {
      const c = schema[k];
      const value = (v as Record<string, unknown>)[k];
      if (value === undefined && !('optional' in c)) problems.push(`${name}.${k} is required`);
      else if (value !== undefined) {
        const why = c(value);
        if (why) problems.push(`${name}.${k} ${why} (${describe(value)})`);
      }
    }
    return problems;
  };
  const c = (v: unknown) => fields(v, 'the value')[0];
  return Object.assign(c, { fields }, required ? {} : { optional: true as const });
}

/** A value as a problem names it: its type, and the value itself when short. */
function describe(v: unknown): string {
  if (v === undefined || v === null) return `got ${v}`;
  if (typeof v === 'string') return `got the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `got the ${typeof v} ${String(v)}`;
  if (Array.isArray(v)) return `got an array of ${v.length}`;
  return `got ${typeof v === 'function' ? 'a function' : 'an object'}`;
}

interface Param {
  name: string;
  check: Check & { optional?: true; fields?: (v: unknown, name: string) => string[] };
}

/** Every problem with the arguments of one call of `fn`, as lines. */
function problems(fnName: string, params: Param[], args: unknown[]): string[] {
  const out: string[] = [];
  if (args.length > params.length) out.push(`takes ${params.length === 0 ? 'no arguments' : `at most ${params.length} argument${params.length === 1 ? '' : 's'} (${params.map((p) => p.name).join(', ')})`}; got ${args.length}`);
  params.forEach((p, i) => {
    const v = args[i];
    if (p.check.fields) out.push(...p.check.fields(v, p.name));
    else if (v === undefined && !p.check.optional) out.push(`${p.name} is required`);
    else {
      const why = p.check(v);
      if (why) out.push(`${p.name} ${why} (${describe(v)})`);
    }
  });
  return out.map((l) => `${fnName}(): ${l}`);
}

function usage(lines: string[]): HotloadError {
  return new HotloadError('USAGE', lines.length === 1 ? lines[0] : `${lines[0].split(':')[0]}: ${lines.length} problems with the arguments: ${lines.map((l) => l.slice(l.indexOf(':') + 2)).join('; ')}`, {
    hint: 'The typings (index.d.ts) say what each function takes; a pid read from text goes through parsePid().',
    details: lines,
  });
}

/**
 * `fn`, checking its arguments first. `async`: bad arguments reject the
 * promise, as the function's other errors do. `extra`: problems no one
 * argument shows (called only when each argument is fine).
 */
function checked<F extends (...a: never[]) => unknown>(name: string, params: Param[], fn: F, how: { async?: boolean; extra?: (...a: Parameters<F>) => string[] } = {}): F {
  const wrapped = (...args: Parameters<F>) => {
    const lines = problems(name, params, args);
    if (lines.length === 0 && how.extra) lines.push(...how.extra(...args).map((l) => `${name}(): ${l}`));
    if (lines.length) {
      if (how.async) return Promise.reject(usage(lines));
      throw usage(lines);
    }
    return fn(...args);
  };
  return wrapped as unknown as F;
}

const attachOptions = options<AttachOptions>({ allowUnsafeFile: optional(flag), safePointTimeoutMs: optional(ms), callTimeoutMs: optional(ms), waitInactiveMs: optional(ms), replace: optional(text), onProgress: optional(fn) });
const revertOptions = options<RevertOptions>({ all: optional(flag), safePointTimeoutMs: optional(ms), callTimeoutMs: optional(ms) });
const rolloutOptions = options<RolloutOptions>({ dryRun: optional(flag), onEvent: optional(fn), baseDir: optional(text), signal: optional(signal) });
const mkpatchOptions = options<MkpatchOptions>({ sources: someTexts, target: text, out: text, cc: optional(text), cflags: optional(texts), description: optional(text) }, true);
const rebuildOptions = options<RebuildOptions>({ from: text, to: text, target: text, out: text, also: optional(textMap), redirected: optional(textSet), description: optional(text), cc: optional(text), run: optional(fn) }, true);
const watchOptions = options<WatchOptions>(
  {
    pids,
    build: optional(text),
    compile: optional(flag),
    paths: optional(texts),
    objects: optional(text),
    target: optional(text),
    cwd: optional(text),
    intervalMs: optional(count),
    follow: optional(flag),
    maxPatches: optional(count),
    signal: optional(signal),
    onEvent: optional(fn),
  },
  true,
);

export const attach = checked('attach', [{ name: 'pid', check: pid }, { name: 'patchFile', check: text }, { name: 'opts', check: attachOptions }], injector.attach);
export const checkAttach = checked('checkAttach', [{ name: 'pid', check: pid }, { name: 'patchFile', check: text }, { name: 'opts', check: options<{ allowUnsafeFile?: boolean }>({ allowUnsafeFile: optional(flag) }) }], injector.checkAttach);
export const revert = checked('revert', [{ name: 'pid', check: pid }, { name: 'patchFile', check: optional(text) }, { name: 'opts', check: revertOptions }], injector.revert, {
  extra: (_pid, patchFile, opts) => (patchFile === undefined && !opts?.all ? ['name a patch to revert, or pass { all: true }'] : []),
});
export const status = checked('status', [{ name: 'pid', check: pid }], injector.status);
export const ps = checked('ps', [], injector.ps);
export const resolveTargets = checked('resolveTargets', [{ name: 'spec', check: pidOrText }], injector.resolveTargets);
export const parsePid = checked('parsePid', [{ name: 'text', check: is((v) => typeof v === 'string', 'a string') }], injector.parsePid);
export const pidsByName = checked('pidsByName', [{ name: 'name', check: text }], injector.pidsByName);
export const pidsByExe = checked('pidsByExe', [{ name: 'exe', check: text }], injector.pidsByExe);
export const pidsByBuildId = checked('pidsByBuildId', [{ name: 'buildId', check: is((v) => typeof v === 'string' && /^[0-9a-f]+$/i.test(v), 'a build-id in hex') }], injector.pidsByBuildId);

export const mkpatch = checked('mkpatch', [{ name: 'opts', check: mkpatchOptions }], patch.mkpatch);
export const mkpatchFromBuilds = checked('mkpatchFromBuilds', [{ name: 'opts', check: rebuildOptions }], patch.mkpatchFromBuilds, { async: true });
export const findProgram = checked('findProgram', [{ name: 'build', check: text }], patch.findProgram);
export const diffBuilds = checked('diffBuilds', [{ name: 'oldPath', check: text }, { name: 'newPath', check: text }], patch.diffBuilds);

export const rollout = checked('rollout', [{ name: 'plan', check: anything }, { name: 'opts', check: rolloutOptions }], plans.rollout, { async: true });
export const loadPlan = checked('loadPlan', [{ name: 'file', check: text }], plans.loadPlan);
export const validatePlan = checked('validatePlan', [{ name: 'raw', check: optional(anything) }, { name: 'name', check: optional(text) }], plans.validatePlan);
export const planTargets = checked('planTargets', [{ name: 'plan', check: anything }, { name: 'baseDir', check: optional(text) }], (plan: plans.RolloutPlan, baseDir?: string) =>
  plans.planTargets(plans.validatePlan(plan), baseDir),
);

export const watch = checked('watch', [{ name: 'opts', check: watchOptions }], watching.watch, { async: true });
