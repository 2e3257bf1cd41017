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
// HOTLOAD_PID set; exit 0 is healthy. When a step or check fails on a process,
// what this rollout applied there is reverted, newest first. When the canary
// fails, no other process is touched. A process that exits meanwhile is
// reported as such and the others go on. An interrupted rollout (opts.signal:
// the CLI's Ctrl-C or SIGTERM) starts no other process, cuts the wait or check
// in progress short, and reverts everything it applied, newest first.
//
// The ptrace work of each process runs on Node's main thread, one process at a
// time (the kernel ties a tracee to the thread that attached); waits and checks
// of different processes overlap.

import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { HotloadError, isHotloadError } from '@hotload/errors';
import { attach, checkAttach, pidsByBuildId, pidsByExe, pidsByName, processExists, revert } from '@hotload/injector';
import { sleep } from './sleep';

export type Step = { apply: string } | { revert: string } | { wait: number } | { check: string };

export interface RolloutPlan {
  targets: { pids?: number[]; name?: string; exe?: string; buildId?: string };
  canary?: number;
  parallel?: number;
  steps: Step[];
  healthCheck?: string;
  checkTimeoutMs?: number;
}

export type ProcessStatus = 'applied' | 'skipped' | 'failed' | 'exited' | 'interrupted' | 'would-apply' | 'would-fail';

export interface ProcessResult {
  pid: number;
  status: ProcessStatus;
  /** Why it was skipped or failed. */
  reason?: string;
  code?: string;
  /** Patches this rollout applied there and left in force. */
  applied: string[];
  /** Patches it applied and then reverted because something failed. */
  reverted: string[];
  canary: boolean;
  ms: number;
}

export interface RolloutResult {
  outcome: 'success' | 'partial' | 'failure' | 'interrupted';
  /** A dry run: nothing applied, and no wait or health check run. */
  dryRun: boolean;
  processes: ProcessResult[];
  ms: number;
}

export type RolloutEvent =
  | { type: 'targets'; pids: number[] }
  | { type: 'process-start'; pid: number; canary: boolean }
  | { type: 'step'; pid: number; step: Step; ok: boolean; detail?: string }
  | { type: 'process-done'; result: ProcessResult };

export interface RolloutOptions {
  dryRun?: boolean;
  onEvent?: (e: RolloutEvent) => void;
  /** Directory that relative paths in the plan are relative to. */
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
    const keys = Object.keys(t).filter((k) => ['pids', 'name', 'exe', 'buildId'].includes(k));
    if (keys.length !== 1) problems.push(`"targets" must have exactly one of "pids", "name", "exe", "buildId" (has ${keys.length ? keys.join(', ') : 'none'})`);
    if ('pids' in t && (!Array.isArray(t.pids) || t.pids.length === 0 || !t.pids.every((p) => Number.isInteger(p) && (p as number) > 0))) problems.push('"targets.pids" must be a non-empty array of process ids');
    for (const k of ['name', 'exe', 'buildId']) if (k in t && (typeof t[k] !== 'string' || !(t[k] as string).length)) problems.push(`"targets.${k}" must be a non-empty string`);
  }
  for (const k of ['canary', 'parallel', 'checkTimeoutMs']) {
    if (k in raw && (!Number.isInteger(raw[k]) || (raw[k] as number) < (k === 'canary' ? 0 : 1))) problems.push(`"${k}" must be a whole number${k === 'canary' ? ' (0 or more)' : ' (1 or more)'}`);
  }
  if ('healthCheck' in raw && typeof raw.healthCheck !== 'string') problems.push('"healthCheck" must be a shell command (a string)');
  if (!Array.isArray(raw.steps) || raw.steps.length === 0) problems.push('"steps" must be a non-empty array');
  else {
    raw.steps.forEach((s, i) => {
      if (!isObj(s) || Object.keys(s).length !== 1) {
        problems.push(`steps[${i}] must be one of {"apply": file}, {"revert": file}, {"wait": ms}, {"check": command}`);
        return;
      }
      const [k, v] = Object.entries(s)[0];
      if (k === 'apply' || k === 'revert' || k === 'check') {
        if (typeof v !== 'string' || !v.length) problems.push(`steps[${i}].${k} must be a non-empty string`);
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

function runCheck(cmd: string, pid: number, timeoutMs: number, cwd: string, signal?: AbortSignal): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const c = spawn('sh', ['-c', cmd], { cwd, env: { ...process.env, HOTLOAD_PID: String(pid) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    const onAbort = () => c.kill('SIGKILL');
    signal?.addEventListener('abort', onAbort, { once: true });
    c.on('close', (code, sig) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      const tail = out.trim().split('\n').slice(-3).join(' | ');
      const why = signal?.aborted ? 'stopped: the rollout was interrupted' : sig ? `killed after ${timeoutMs} ms` : `exited ${code}`;
      resolve({ ok: code === 0, detail: code === 0 ? tail : `\`${cmd}\` ${why}${tail ? `: ${tail}` : ''}` });
    });
  });
}

const interrupted = () => new HotloadError('INTERRUPTED', 'the rollout was interrupted');

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

/** Run a plan. Resolves with one result per process; never rejects for a per-process failure. */
export async function rollout(plan: RolloutPlan, opts: RolloutOptions = {}): Promise<RolloutResult> {
  const t0 = Date.now();
  const baseDir = opts.baseDir ?? process.cwd();
  const emit = opts.onEvent ?? (() => undefined);
  const pids = planTargets(plan, baseDir);
  if (pids.length === 0) throw new HotloadError('PID_NOT_FOUND', 'the plan\'s targets match no running process');
  emit({ type: 'targets', pids });
  const abs = (f: string) => path.resolve(baseDir, f);
  const canaryCount = Math.min(plan.canary ?? 1, pids.length);
  const parallel = plan.parallel ?? 4;
  const checkMs = plan.checkTimeoutMs ?? 10000;
  const signal = opts.signal;

  const one = async (pid: number, canary: boolean): Promise<ProcessResult> => {
    const start = Date.now();
    const r: ProcessResult = { pid, status: 'applied', applied: [], reverted: [], canary, ms: 0 };
    emit({ type: 'process-start', pid, canary });
    const fail = (status: ProcessStatus, reason: string, code?: string) => {
      r.status = status;
      r.reason = reason;
      if (code) r.code = code;
    };
    try {
      if (opts.dryRun) {
        dryRunOne(pid, plan, abs);
        r.status = 'would-apply';
      } else {
        const steps = [...plan.steps, ...(plan.healthCheck ? [{ check: plan.healthCheck }] : [])];
        for (const step of steps) {
          if (signal?.aborted) throw interrupted();
          if ('apply' in step) {
            try {
              attach(pid, abs(step.apply));
              r.applied.push(abs(step.apply));
              emit({ type: 'step', pid, step, ok: true });
            } catch (e) {
              if (isHotloadError(e) && e.code === 'PATCH_ALREADY_APPLIED') {
                emit({ type: 'step', pid, step, ok: true, detail: 'already applied' });
                continue;
              }
              throw e;
            }
          } else if ('revert' in step) {
            revert(pid, abs(step.revert));
            r.applied = r.applied.filter((a) => a !== abs(step.revert));
            emit({ type: 'step', pid, step, ok: true });
          } else if ('wait' in step) {
            await sleep(step.wait, signal);
            if (signal?.aborted) throw interrupted();
            emit({ type: 'step', pid, step, ok: true });
          } else {
            const c = await runCheck(step.check, pid, checkMs, baseDir, signal);
            if (signal?.aborted) throw interrupted();
            emit({ type: 'step', pid, step, ok: c.ok, detail: c.detail });
            if (!c.ok) throw new HotloadError('HOOK_FAILED', `health check failed: ${c.detail}`);
          }
          if (!processExists(pid)) throw new HotloadError('PID_NOT_FOUND', `process ${pid} exited`);
        }
        if (r.applied.length === 0) fail('skipped', 'every patch was already applied');
      }
    } catch (e) {
      const err = isHotloadError(e) ? e : new HotloadError('INTERNAL', String(e));
      if (!processExists(pid)) fail('exited', `process exited during the rollout (${err.message})`, 'PID_NOT_FOUND');
      else {
        fail(err.code === 'INTERRUPTED' ? 'interrupted' : opts.dryRun ? 'would-fail' : 'failed', err.message, err.code);
        // The way back: revert what this rollout applied here, newest first.
        r.reason += revertApplied(r);
      }
    }
    r.ms = Date.now() - start;
    emit({ type: 'process-done', result: r });
    return r;
  };

  const results: ProcessResult[] = [];
  const skip = (pid: number, canary: boolean, reason: string) => {
    const r: ProcessResult = { pid, status: 'skipped', reason, applied: [], reverted: [], canary, ms: 0 };
    results.push(r);
    emit({ type: 'process-done', result: r });
  };
  // The canary, alone.
  const canaries = pids.slice(0, canaryCount);
  for (const pid of canaries) {
    if (signal?.aborted) skip(pid, true, 'interrupted before it was started');
    else results.push(await one(pid, true));
  }
  const canaryFailed = results.some((r) => r.status === 'failed' || r.status === 'would-fail');
  const rest = pids.slice(canaryCount);
  if (canaryFailed && !opts.dryRun) {
    for (const pid of rest) skip(pid, false, 'the canary failed; nothing else was touched');
  } else {
    // Then the rest, at most `parallel` at once.
    let next = 0;
    const workers = Array.from({ length: Math.min(parallel, rest.length) }, async () => {
      while (next < rest.length) {
        const pid = rest[next++];
        if (signal?.aborted) skip(pid, false, 'interrupted before it was started');
        else results.push(await one(pid, false));
      }
    });
    await Promise.all(workers);
  }
  if (signal?.aborted) {
    // Interrupted: the processes that had finished give back what they got
    // too, the last finished first.
    for (const r of [...results].reverse()) {
      if (r.status !== 'applied' || r.applied.length === 0) continue;
      r.status = 'interrupted';
      r.code = 'INTERRUPTED';
      r.reason = 'the rollout was interrupted' + revertApplied(r);
      emit({ type: 'process-done', result: r });
    }
    results.sort((a, b) => Number(b.canary) - Number(a.canary) || a.pid - b.pid);
    return { outcome: 'interrupted', dryRun: !!opts.dryRun, processes: results, ms: Date.now() - t0 };
  }
  results.sort((a, b) => Number(b.canary) - Number(a.canary) || a.pid - b.pid);
  const good = results.filter((r) => r.status === 'applied' || r.status === 'skipped' || r.status === 'would-apply').length;
  const outcome = good === results.length ? 'success' : results.some((r) => r.status === 'applied' || r.status === 'would-apply') ? 'partial' : 'failure';
  return { outcome, dryRun: !!opts.dryRun, processes: results, ms: Date.now() - t0 };
}

/** Check, without touching the process, that each apply step fits it. */
function dryRunOne(pid: number, plan: RolloutPlan, abs: (f: string) => string): void {
  if (!processExists(pid)) throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
  for (const step of plan.steps) if ('apply' in step) checkAttach(pid, abs(step.apply));
}
