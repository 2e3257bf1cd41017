// Scripted rollouts: apply (and revert) patches across several processes,
// canary first, with a health check after each process and an automatic way
// back.
//
// A plan (JSON):
//   {
//     "targets": { "pids": [101, 102] } | { "name": "server" } | { "exe": "./server" } | { "buildId": "5f34..." },
//     "canary": 1,                       // processes done first, alone (default 1)
//     "parallel": 4,                     // then at most this many at once (default 4)
//     "steps": [ { "apply": "fix.so" }, { "wait": 200 }, { "check": "curl -sf localhost:$PORT/health" } ],
//     "healthCheck": "./check.sh",       // run after each process's steps (optional)
//     "checkTimeoutMs": 10000
//   }
// Paths are relative to the plan file. A check command runs under `sh -c` with
// HOTLOAD_PID set; exit 0 is healthy. From a script, a check (a step's or the
// plan's healthCheck) may also be a function, given the pid, the step and an
// AbortSignal; a throw, a rejection, `false` or no answer within
// checkTimeoutMs is a failure. `rollout()` validates the plan as the CLI does
// (validatePlan). When a step or check fails on a process, what this rollout
// applied there is reverted, newest first. When the canary fails, no other
// process is touched. A process that exits meanwhile is reported as such and
// the others go on.
//
// The rollout stops early when it is interrupted (opts.signal: the CLI's
// Ctrl-C or SIGTERM) or when the script's onEvent callback throws: it starts
// no other process, cuts the wait or check in progress short, and reverts
// everything it applied, newest first. Either way the promise resolves with
// one result per process once every process is back where it was (or its
// revert failed, which that process's result says); it rejects only before
// anything is touched (an invalid plan, no target). Each process has one
// `process-done` event; a finished process reverted by a stop later has a
// `process-reverted` event.
//
// The ptrace work of each process runs on Node's main thread, one process at a
// time (the kernel ties a tracee to the thread that attached); waits and checks
// of different processes overlap.

import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ErrorCode, HotloadError, isHotloadError } from '@hotload/errors';
import { attach, checkAttach, pidsByBuildId, pidsByExe, pidsByName, processExists, revert } from '@hotload/injector';
import { sleep } from './sleep';

/**
 * A health check given as a function (from a script; a JSON plan has only
 * commands). It is given the process's pid, the step it runs as (for the
 * plan's healthCheck, `{ check: healthCheck }`) and a signal aborted when the
 * check has run out of time or the rollout stops. Healthy unless it throws,
 * rejects, returns `false` or does not settle within the plan's
 * checkTimeoutMs; it may be synchronous or async.
 */
export type HealthCheckFunction = (pid: number, step: CheckStep, signal: AbortSignal) => boolean | void | Promise<boolean | void>;
/** A shell command (run under `sh -c` with HOTLOAD_PID set; exit 0 is healthy) or a function. */
export type HealthCheck = string | HealthCheckFunction;
export type CheckStep = { check: HealthCheck };
export type Step = { apply: string } | { revert: string } | { wait: number } | CheckStep;

export interface RolloutPlan {
  targets: { pids?: number[]; name?: string; exe?: string; buildId?: string };
  /** Processes done first, alone (default 1; 0 for none). */
  canary?: number;
  /** Then at most this many at once (default 4). */
  parallel?: number;
  steps: Step[];
  /** Run after each process's steps. */
  healthCheck?: HealthCheck;
  /** A check still running after this many ms fails (default 10000). */
  checkTimeoutMs?: number;
}

export type ProcessStatus = 'applied' | 'skipped' | 'failed' | 'exited' | 'interrupted' | 'would-apply' | 'would-fail';

export interface ProcessResult {
  pid: number;
  status: ProcessStatus;
  /** Why it was skipped, failed or interrupted. */
  reason?: string;
  code?: ErrorCode;
  /** Patches this rollout applied there and left in force. */
  applied: string[];
  /** Patches it applied and then reverted because something failed or the rollout stopped. */
  reverted: string[];
  canary: boolean;
  ms: number;
}

export interface RolloutResult {
  /** `interrupted`: by opts.signal; a rollout stopped by a throwing callback is a `failure`, with `error`. */
  outcome: 'success' | 'partial' | 'failure' | 'interrupted';
  /** A dry run: nothing applied, and no wait or health check run. */
  dryRun: boolean;
  processes: ProcessResult[];
  ms: number;
  /**
   * Why the rollout stopped early other than by opts.signal: the onEvent
   * callback threw (CALLBACK_FAILED) or hotload failed (INTERNAL). What it had
   * applied was reverted; a revert that failed is in its process's result.
   */
  error?: ReturnType<HotloadError['toJSON']>;
}

export type RolloutEvent =
  | { type: 'targets'; pids: number[] }
  | { type: 'process-start'; pid: number; canary: boolean }
  | { type: 'step'; pid: number; step: Step; ok: boolean; detail?: string }
  /** Once per process, when its steps are over (or it was skipped). */
  | { type: 'process-done'; result: ProcessResult }
  /** A process that was done gave back what it got because the rollout stopped. */
  | { type: 'process-reverted'; result: ProcessResult };

export interface RolloutOptions {
  /** Check every patch against every target; change nothing, run no wait and no check. */
  dryRun?: boolean;
  /**
   * Called at each event, synchronously. A callback that throws (or an async
   * one that rejects) stops the rollout: what it applied is reverted and the
   * result's `error` says what the callback threw (CALLBACK_FAILED).
   */
  onEvent?: (e: RolloutEvent) => void;
  /** Directory that relative paths in the plan are relative to, and checks run in (default: the current one). */
  baseDir?: string;
  /** Aborted: start no other process, stop the step in progress, revert what this rollout applied. */
  signal?: AbortSignal;
}

/** Read and validate a plan file; every problem is listed. */
export function loadPlan(file: string): { plan: RolloutPlan; baseDir: string } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new HotloadError('FILE_NOT_FOUND', `${file}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new HotloadError('PLAN_INVALID', `${file}: not valid JSON: ${(e as Error).message}`);
  }
  return { plan: validatePlan(raw, file), baseDir: path.dirname(path.resolve(file)) };
}

export function validatePlan(raw: unknown, name = 'plan'): RolloutPlan {
  const problems: string[] = [];
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(raw)) throw new HotloadError('PLAN_INVALID', `${name}: the plan must be a JSON object`);
  const known = new Set(['targets', 'canary', 'parallel', 'steps', 'healthCheck', 'checkTimeoutMs']);
  for (const k of Object.keys(raw)) if (!known.has(k)) problems.push(`unknown field "${k}" (known: ${[...known].join(', ')})`);
  const t = raw.targets;
  if (!isObj(t)) problems.push('"targets" must be an object with one of "pids", "name", "exe", "buildId"');
  else {
    const kinds = ['pids', 'name', 'exe', 'buildId'];
    // A misspelt key ("pid", "names") would otherwise be dropped without a word.
    for (const k of Object.keys(t)) if (!kinds.includes(k)) problems.push(`unknown field "targets.${k}" (known in "targets": ${kinds.join(', ')})`);
    const keys = Object.keys(t).filter((k) => kinds.includes(k));
    if (keys.length !== 1) problems.push(`"targets" must have exactly one of "pids", "name", "exe", "buildId" (has ${keys.length ? keys.join(', ') : 'none'})`);
    if ('pids' in t && (!Array.isArray(t.pids) || t.pids.length === 0 || !t.pids.every((p) => Number.isInteger(p) && (p as number) > 0))) problems.push('"targets.pids" must be a non-empty array of process ids');
    for (const k of ['name', 'exe', 'buildId']) if (k in t && (typeof t[k] !== 'string' || !(t[k] as string).length)) problems.push(`"targets.${k}" must be a non-empty string`);
  }
  for (const k of ['canary', 'parallel', 'checkTimeoutMs']) {
    if (k in raw && (!Number.isInteger(raw[k]) || (raw[k] as number) < (k === 'canary' ? 0 : 1))) problems.push(`"${k}" must be a whole number${k === 'canary' ? ' (0 or more)' : ' (1 or more)'}`);
  }
  const isCheck = (v: unknown) => (typeof v === 'string' && v.length > 0) || typeof v === 'function';
  if ('healthCheck' in raw && !isCheck(raw.healthCheck)) problems.push('"healthCheck" must be a shell command (a non-empty string) or, from a script, a function');
  if (!Array.isArray(raw.steps) || raw.steps.length === 0) problems.push('"steps" must be a non-empty array');
  else {
    raw.steps.forEach((s, i) => {
      if (!isObj(s) || Object.keys(s).length !== 1) {
        problems.push(`steps[${i}] must be one of {"apply": file}, {"revert": file}, {"wait": ms}, {"check": command}`);
        return;
      }
      const [k, v] = Object.entries(s)[0];
      if (k === 'apply' || k === 'revert') {
        if (typeof v !== 'string' || !v.length) problems.push(`steps[${i}].${k} must be a non-empty string`);
      } else if (k === 'check') {
        if (!isCheck(v)) problems.push(`steps[${i}].check must be a shell command (a non-empty string) or, from a script, a function`);
      } else if (k === 'wait') {
        if (!Number.isInteger(v) || (v as number) < 0) problems.push(`steps[${i}].wait must be a number of milliseconds`);
      } else problems.push(`steps[${i}]: unknown step "${k}" (apply, revert, wait, check)`);
    });
  }
  if (problems.length) throw new HotloadError('PLAN_INVALID', `${name}: ${problems.length} problem${problems.length === 1 ? '' : 's'}`, { details: problems });
  return raw as unknown as RolloutPlan;
}

/** The pids a plan names, in a stable order. */
export function planTargets(plan: RolloutPlan, baseDir = process.cwd()): number[] {
  const t = plan.targets;
  let pids: number[];
  if (t.pids) pids = t.pids;
  else if (t.name) pids = pidsByName(t.name);
  else if (t.exe) pids = pidsByExe(path.resolve(baseDir, t.exe));
  else pids = pidsByBuildId(t.buildId!);
  return [...new Set(pids)].sort((a, b) => a - b);
}

/** A check command under `sh -c`, killed when it runs out of time or the rollout stops. */
function runCommand(cmd: string, pid: number, timeoutMs: number, cwd: string, signal: AbortSignal): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    // The command leads a process group of its own: its timeout, a stop, or
    // its end kills everything it started (a `sleep` of its own kept running,
    // and kept its output open, so the check outlived its timeout by as long).
    const c = spawn('sh', ['-c', cmd], { cwd, env: { ...process.env, HOTLOAD_PID: String(pid) }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    const killGroup = () => {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        /* the group is gone */
      }
    };
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      killGroup();
    }, timeoutMs);
    const onAbort = () => killGroup();
    signal.addEventListener('abort', onAbort, { once: true });
    c.on('exit', (code) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      killGroup(); // what it left running in its group
      // Its output, once the pipes close: at most 100 ms more (a process that
      // left the group may hold them open).
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        c.stdout.destroy();
        c.stderr.destroy();
        const tail = out.trim().split('\n').slice(-3).join(' | ');
        const why = signal.aborted ? 'stopped: the rollout stopped' : killed || code === null ? `killed after ${timeoutMs} ms` : `exited ${code}`;
        const ok = code === 0 && !killed && !signal.aborted;
        resolve({ ok, detail: ok ? tail : `\`${cmd}\` ${why}${tail ? `: ${tail}` : ''}` });
      };
      c.once('close', finish);
      setTimeout(finish, 100).unref();
    });
  });
}

/** A check function: a throw, a rejection, `false` or no answer within `timeoutMs` fails. */
async function runFunction(fn: HealthCheckFunction, pid: number, step: CheckStep, timeoutMs: number, signal: AbortSignal): Promise<{ ok: boolean; detail: string }> {
  // A function's own name says which check it was; an arrow function takes its property's name ("healthCheck").
  const name = fn.name && fn.name !== 'healthCheck' && fn.name !== 'check' ? `health check ${fn.name}()` : 'the health check function';
  const own = new AbortController(); // the function's: aborted when it runs out of time or the rollout stops
  let settle: (r: { ok: boolean; detail: string }) => void = () => undefined;
  const cut = new Promise<{ ok: boolean; detail: string }>((resolve) => (settle = resolve));
  const timer = setTimeout(() => {
    own.abort();
    settle({ ok: false, detail: `${name} did not settle within ${timeoutMs} ms` });
  }, timeoutMs);
  const onStop = () => {
    own.abort();
    settle({ ok: false, detail: `${name} stopped: the rollout stopped` });
  };
  signal.addEventListener('abort', onStop, { once: true });
  const ran = (async () => {
    try {
      return (await fn(pid, step, own.signal)) === false ? { ok: false, detail: `${name} returned false` } : { ok: true, detail: '' };
    } catch (e) {
      return { ok: false, detail: `${name} threw: ${describe(e)}` };
    }
  })();
  try {
    return await Promise.race([ran, cut]);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onStop);
  }
}

function runCheck(check: HealthCheck, step: CheckStep, pid: number, timeoutMs: number, cwd: string, signal: AbortSignal): Promise<{ ok: boolean; detail: string }> {
  return typeof check === 'function' ? runFunction(check, pid, step, timeoutMs, signal) : runCommand(check, pid, timeoutMs, cwd, signal);
}

/** What was thrown, in one line (a script may throw anything). */
function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name === 'Error' ? '' : `${e.name}: `}${e.message}`;
  try {
    return typeof e === 'string' ? e : JSON.stringify(e) ?? String(e);
  } catch {
    return String(e);
  }
}

/** Revert, newest first, what the rollout applied to one process; returns why any revert failed. */
function revertApplied(r: ProcessResult): string {
  let why = '';
  for (const a of [...r.applied].reverse()) {
    try {
      revert(r.pid, a);
      r.reverted.push(a);
    } catch (re) {
      why += `; reverting ${path.basename(a)} failed too: ${(re as Error).message}`;
    }
  }
  r.applied = r.applied.filter((a) => !r.reverted.includes(a));
  return why;
}

/**
 * Run a plan (validated first, as the CLI validates a plan file). Rejects,
 * touching nothing, when the plan is invalid (PLAN_INVALID) or names no
 * running process (PID_NOT_FOUND); otherwise resolves with one result per
 * process, whatever failed.
 */
export async function rollout(plan: RolloutPlan, opts: RolloutOptions = {}): Promise<RolloutResult> {
  const valid = validatePlan(plan);
  const baseDir = opts.baseDir ?? process.cwd();
  const pids = planTargets(valid, baseDir);
  if (pids.length === 0) throw new HotloadError('PID_NOT_FOUND', 'the plan\'s targets match no running process; nothing was touched');
  return new RolloutRun(valid, opts, baseDir).run(pids);
}

/** Why a rollout stopped before its end: its signal, its callback, or a hotload bug. */
type Stop = { code: 'INTERRUPTED' | 'CALLBACK_FAILED' | 'INTERNAL'; error: HotloadError };

/** One run of a plan: the processes' results so far, and whether (and why) it stopped. */
class RolloutRun {
  private readonly t0 = Date.now();
  /** Every process's result, made when it starts (so a stop finds what it applied). */
  private readonly results: ProcessResult[] = [];
  /** Aborted when the run stops, for any reason: what every wait and check listens to. */
  private readonly stopper = new AbortController();
  private stop?: Stop;
  /** An async callback's promises, waited for before the run decides it is over. */
  private readonly callbacks: Promise<void>[] = [];
  private readonly abs = (f: string) => path.resolve(this.baseDir, f);

  constructor(
    private readonly plan: RolloutPlan,
    private readonly opts: RolloutOptions,
    private readonly baseDir: string,
  ) {}

  async run(pids: number[]): Promise<RolloutResult> {
    const onSignal = () => this.stopWith({ code: 'INTERRUPTED', error: new HotloadError('INTERRUPTED', 'the rollout was interrupted') });
    this.opts.signal?.addEventListener('abort', onSignal, { once: true });
    if (this.opts.signal?.aborted) onSignal();
    try {
      this.emit({ type: 'targets', pids });
      await this.runAll(pids);
    } catch (e) {
      // A bug of hotload's own: stop, and still give back everything below.
      this.stopWith({ code: 'INTERNAL', error: new HotloadError('INTERNAL', `the rollout failed: ${describe(e)}`) });
    } finally {
      this.opts.signal?.removeEventListener('abort', onSignal);
    }
    // A callback's rejection may come after the event it was given.
    await Promise.allSettled(this.callbacks);
    if (this.stop) this.rollBack();
    return this.summary();
  }

  /** The canary alone, then the rest, at most `parallel` at once. */
  private async runAll(pids: number[]): Promise<void> {
    const canaryCount = Math.min(this.plan.canary ?? 1, pids.length);
    for (const pid of pids.slice(0, canaryCount)) await this.runOrSkip(pid, true);
    const rest = pids.slice(canaryCount);
    const canaryFailed = this.results.some((r) => r.status === 'failed' || r.status === 'would-fail');
    if (canaryFailed && !this.opts.dryRun) {
      for (const pid of rest) this.skip(pid, false, 'the canary failed; nothing else was touched');
      return;
    }
    let next = 0;
    const worker = async () => {
      while (next < rest.length) await this.runOrSkip(rest[next++], false);
    };
    const settled = await Promise.allSettled(Array.from({ length: Math.min(this.plan.parallel ?? 4, rest.length) }, worker));
    // Every worker is over (none goes on patching after this); a bug in one is the rollout's.
    const bug = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (bug) throw bug.reason;
  }

  private async runOrSkip(pid: number, canary: boolean): Promise<void> {
    if (this.stop) this.skip(pid, canary, this.stop.code === 'INTERRUPTED' ? 'interrupted before it was started' : `not started: ${this.stop.error.message}`);
    else await this.runOne(pid, canary);
  }

  private skip(pid: number, canary: boolean, reason: string): void {
    const r: ProcessResult = { pid, status: 'skipped', reason, applied: [], reverted: [], canary, ms: 0 };
    this.results.push(r);
    this.emit({ type: 'process-done', result: r });
  }

  /** One process's steps, then its health check; on a failure, what they applied there is reverted. */
  private async runOne(pid: number, canary: boolean): Promise<void> {
    const start = Date.now();
    const r: ProcessResult = { pid, status: 'applied', applied: [], reverted: [], canary, ms: 0 };
    this.results.push(r);
    this.emit({ type: 'process-start', pid, canary });
    try {
      if (this.opts.dryRun) {
        if (this.stop) throw this.stop.error;
        dryRunOne(pid, this.plan, this.abs);
        r.status = 'would-apply';
      } else {
        await this.runSteps(r);
        if (r.applied.length === 0) Object.assign(r, { status: 'skipped', reason: 'every patch was already applied' });
      }
    } catch (e) {
      const err = isHotloadError(e) ? e : new HotloadError('INTERNAL', describe(e));
      if (!processExists(pid)) Object.assign(r, { status: 'exited', reason: `process exited during the rollout (${err.message})`, code: 'PID_NOT_FOUND' });
      else {
        const stopped = this.stop !== undefined && err === this.stop.error;
        Object.assign(r, { status: stopped ? 'interrupted' : this.opts.dryRun ? 'would-fail' : 'failed', reason: err.message, code: err.code });
        // The way back: revert what this rollout applied here, newest first.
        r.reason += revertApplied(r);
      }
    }
    r.ms = Date.now() - start;
    this.emit({ type: 'process-done', result: r });
  }

  private async runSteps(r: ProcessResult): Promise<void> {
    const { pid } = r;
    const signal = this.stopper.signal;
    const steps: Step[] = [...this.plan.steps, ...(this.plan.healthCheck ? [{ check: this.plan.healthCheck }] : [])];
    for (const step of steps) {
      this.throwIfStopped();
      if ('apply' in step) {
        try {
          attach(pid, this.abs(step.apply));
          r.applied.push(this.abs(step.apply));
          this.emit({ type: 'step', pid, step, ok: true });
        } catch (e) {
          if (!isHotloadError(e) || e.code !== 'PATCH_ALREADY_APPLIED') throw e;
          this.emit({ type: 'step', pid, step, ok: true, detail: 'already applied' });
        }
      } else if ('revert' in step) {
        revert(pid, this.abs(step.revert));
        r.applied = r.applied.filter((a) => a !== this.abs(step.revert));
        this.emit({ type: 'step', pid, step, ok: true });
      } else if ('wait' in step) {
        await sleep(step.wait, signal);
        this.throwIfStopped();
        this.emit({ type: 'step', pid, step, ok: true });
      } else {
        const c = await runCheck(step.check, step, pid, this.plan.checkTimeoutMs ?? 10000, this.baseDir, signal);
        this.throwIfStopped();
        this.emit({ type: 'step', pid, step, ok: c.ok, detail: c.detail });
        if (!c.ok) throw new HotloadError('HEALTH_CHECK_FAILED', `health check failed: ${c.detail}`);
      }
      if (!processExists(pid)) throw new HotloadError('PID_NOT_FOUND', `process ${pid} exited`);
    }
  }

  private throwIfStopped(): void {
    if (this.stop) throw this.stop.error;
  }

  /** The first reason to stop is the one reported; every wait and check in progress is cut short. */
  private stopWith(stop: Stop): void {
    if (this.stop) return;
    this.stop = stop;
    this.stopper.abort();
  }

  /** Give an event to the script's callback; a throw (or an async callback's rejection) stops the rollout. */
  private emit(e: RolloutEvent): void {
    const cb = this.opts.onEvent;
    if (!cb) return;
    const threw = (err: unknown) => {
      const at = e.type === 'targets' ? 'targets' : `${e.type} of process ${'pid' in e ? e.pid : e.result.pid}`;
      this.stopWith({ code: 'CALLBACK_FAILED', error: new HotloadError('CALLBACK_FAILED', `the onEvent callback threw at ${at}: ${describe(err)}`) });
    };
    try {
      const ret: unknown = cb(e);
      if (ret instanceof Promise) this.callbacks.push(ret.then(() => undefined, threw));
    } catch (err) {
      threw(err);
    }
  }

  /** Stopped: the processes that had finished give back what they got too, the last finished first. */
  private rollBack(): void {
    const stop = this.stop!;
    for (const r of [...this.results].reverse()) {
      if (r.status !== 'applied' || r.applied.length === 0) continue;
      r.status = 'interrupted';
      r.code = stop.code;
      r.reason = stop.error.message + revertApplied(r);
      this.emit({ type: 'process-reverted', result: r });
    }
  }

  private summary(): RolloutResult {
    const results = [...this.results].sort((a, b) => Number(b.canary) - Number(a.canary) || a.pid - b.pid);
    const base = { dryRun: !!this.opts.dryRun, processes: results, ms: Date.now() - this.t0 };
    if (this.stop?.code === 'INTERRUPTED') return { outcome: 'interrupted', ...base };
    if (this.stop) return { outcome: 'failure', ...base, error: this.stop.error.toJSON() };
    const good = results.filter((r) => r.status === 'applied' || r.status === 'skipped' || r.status === 'would-apply').length;
    const outcome = good === results.length ? 'success' : results.some((r) => r.status === 'applied' || r.status === 'would-apply') ? 'partial' : 'failure';
    return { outcome, ...base };
  }
}

/** Check, without touching the process, that each apply step fits it. */
function dryRunOne(pid: number, plan: RolloutPlan, abs: (f: string) => string): void {
  if (!processExists(pid)) throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
  for (const step of plan.steps) if ('apply' in step) checkAttach(pid, abs(step.apply));
}
