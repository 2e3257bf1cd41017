// hotload attach <pid|pids|name> patch.so: load a patch into running processes
// and redirect its functions.
import type { Argv } from 'yargs';
import { AttachResult, HotloadError, attach, isHotloadError, resolveTargets } from '@hotload/api';
import { Out, errorLines } from '../output';
import { demangled } from '@hotload/elf';
import { wholeNumber } from '../args';

export function printAttach(out: Out, r: AttachResult): void {
  out.line(`${out.green('patched')} process ${r.pid} with ${r.patch} (${r.functions.length} function${r.functions.length === 1 ? '' : 's'})${r.description ? `: ${r.description}` : ''}`);
  for (const f of r.functions) out.line(`  ${f.demangled ?? f.name} ${out.dim(f.old)} -> ${f.new}${f.previous !== 'original' ? out.dim(` (stacked on ${f.previous})`) : ''}`);
  if (r.replaced) out.line(`  replaced ${r.replaced.patch} in the same stop: ${r.replaced.functions.map((f) => `${demangled(f.name)} now runs ${f.now}`).join(', ')}`);
  for (const n of r.notes) out.line(n.startsWith('warning: ') ? `  ${out.yellow('warning')}: ${n.slice('warning: '.length)}` : `  ${out.yellow('note')}: ${n}`);
  const t = r.timings;
  const loaded = r.hostThread ? `; loaded in ${t.loadMs.toFixed(2)} ms on thread ${r.hostThread} (away from its own code ${t.hostPausedMs.toFixed(2)} ms)` : '';
  out.line(out.dim(`  ${stopFigures(t, `${r.threads} thread${r.threads === 1 ? '' : 's'}`)}${loaded}; total ${t.totalMs.toFixed(1)} ms`));
}

/**
 * The stop figures, each by its one definition (AttachResult.timings; README,
 * "Stop figures"): the longest single stop of one thread, every stop of every
 * thread added, and the all-threads stop from its first interrupt to its last
 * resume. Worded so none reads as another: the all-threads stop counts time
 * threads still ran before taking the interrupt, and a thread's longest stop
 * may be one of its own (while the borrowed thread is chosen or the stacks looked at).
 */
export function stopFigures(t: { threadStopMaxMs: number; threadStopSumMs: number; stoppedMs: number }, threads: string): string {
  return `stops: longest of one thread ${t.threadStopMaxMs.toFixed(3)} ms, ${t.threadStopSumMs.toFixed(3)} ms added over every stop of ${threads}; all-threads stop ${t.stoppedMs.toFixed(3)} ms from first interrupt to last resume`;
}

/** --wait-inactive[=SECONDS] in ms: 10 s without a value. */
function waitSeconds(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (v === '' || v === true) return 10000;
  const s = wholeNumber('--wait-inactive', 0)(v);
  return s === undefined ? undefined : s * 1000;
}

/** What `--json` prints: one shape whatever the target's form. */
export const JSON_SHAPE = 'With --json: always an array with one {pid, ok, result} or {pid, ok: false, error} per process the target names, even for one pid; the exit status is the first error\'s. An error before any process is tried (no process of that name, a bad argument) is {"error": ...}, as for every command.';

/**
 * Run `op` on each process the target names. Every process is tried; the
 * first error's code ends the command. Without --json, a single pid's error
 * goes to stderr as any command's does, and each failed process of several
 * is said among the results, with its details and hint; with --json, the
 * document is always the array of per-process results.
 */
export function forEachPid<T>(spec: string, out: Out, op: (pid: number) => T, print: (r: T) => void): number {
  const pids = resolveTargets(spec);
  if (/^\d+$/.test(spec) && !out.json) {
    let r: T;
    try {
      r = op(pids[0]);
    } catch (e) {
      if (!isHotloadError(e)) throw e; // a bug: the entry point prints its stack
      const { head, rest } = errorLines(e);
      const color = !!process.stderr.isTTY && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
      process.stderr.write(`${color ? `\x1b[31merror ${e.code}\x1b[0m` : `error ${e.code}`}${head.slice(e.code.length)}\n${rest.map((l) => `${l}\n`).join('')}`);
      return e.exitCode;
    }
    print(r);
    return 0;
  }
  const results: { pid: number; ok: boolean; result?: T; error?: unknown }[] = [];
  let firstError: HotloadError | undefined;
  for (const pid of pids) {
    out.progress(`process ${pid} (${results.length + 1}/${pids.length})`);
    try {
      const r = op(pid);
      results.push({ pid, ok: true, result: r });
      if (!out.json) print(r);
    } catch (e) {
      const err = isHotloadError(e) ? e : new HotloadError('INTERNAL', String(e));
      firstError ??= err;
      results.push({ pid, ok: false, error: err.toJSON() });
      if (!out.json) {
        const { head, rest } = errorLines(err, '  ');
        out.line(`${out.red('failed')} process ${pid}: ${head}`);
        for (const l of rest) out.line(l);
      }
    }
  }
  out.progress('');
  if (out.json) out.doc(results);
  return firstError ? firstError.exitCode : 0;
}

export const attachCommand = {
  command: 'attach <target> <patch>',
  describe: 'Load a patch .so into running processes and redirect the functions it replaces',
  builder: (y: Argv) =>
    y
      .positional('target', { type: 'string', demandOption: true, describe: 'a pid, pids separated by commas, or a process name' })
      .positional('patch', { type: 'string', demandOption: true, describe: 'patch made by `hotload mkpatch`' })
      .option('allow-unsafe-file', { type: 'boolean', default: false, describe: 'accept a patch file that other users could write' })
      .option('timeout', { type: 'string', default: '3000', coerce: wholeNumber('--timeout', 1), describe: 'ms to wait for a safe moment to load the patch' })
      .option('wait-inactive', { type: 'string', coerce: waitSeconds, describe: 'redirect only when no replaced function is running on any thread, waiting up to SECONDS (default 10); then refuse, naming them' })
      .option('replace', { type: 'string', describe: 'a patch applied to the process that this one replaces in the same stop (its functions take the new code or go back to what they ran before it): no moment without a fix' })
      .example('$0 attach 4242 fix-v2.so --replace fix-v1.so', 'go from one version of a fix to the next in one stop')
      .example('$0 attach 4242 fix.so --wait-inactive=5', 'redirect only at a moment when no thread is inside a replaced function')
      .example('$0 attach 4242 fix.so', 'patch one process')
      .example('$0 attach 4242,4243 fix.so', 'patch two processes')
      .example('$0 attach server fix.so --json', 'patch every process named server')
      .epilog(JSON_SHAPE),
  run(argv: { target: string; patch: string; allowUnsafeFile: boolean; timeout: number; waitInactive?: number; replace?: string }, out: Out): number {
    return forEachPid(
      String(argv.target),
      out,
      (pid) => attach(pid, argv.patch, { allowUnsafeFile: argv.allowUnsafeFile, safePointTimeoutMs: argv.timeout, waitInactiveMs: argv.waitInactive, replace: argv.replace, onProgress: (s) => out.progress(s) }),
      (r) => printAttach(out, r),
    );
  },
};
