// hotload rollout <plan.json>: apply patches across processes, canary first,
// with health checks and an automatic way back.
import * as path from 'path';
import type { Argv } from 'yargs';
import { HotloadError, ProcessResult, RolloutEvent, loadPlan, rollout } from '@hotload/api';
import { Out, onInterrupt, table } from '../output';

const PLAN_HELP = `Plan (JSON; YAML is not read):
  {"targets": {"pids": [..]} | {"name": "server"} | {"exe": "./server"} | {"buildId": ".."},
   "canary": 1,              processes done first, alone (default 1; 0 for none)
   "parallel": 4,            then at most this many at once (default 4)
   "steps": [{"apply": "fix.so"}, {"wait": 200}, {"check": "cmd"}, {"revert": "old.so"}],
   "healthCheck": "./check.sh",  run after each process's steps (optional)
   "checkTimeoutMs": 10000}  a check still running then is killed and fails (default 10000)
Paths (apply, revert, exe) are relative to the plan file's folder, and checks run in that folder,
under sh -c with HOTLOAD_PID set; exit 0 is healthy. Waits are in milliseconds. On failure, what the
rollout applied to that process is reverted (newest first); when the canary fails, nothing else is
touched. --dry-run checks that every patch fits every target and changes nothing: it runs no wait
and no health check, and says so.
Ctrl-C or SIGTERM: no other process is started, the step in progress stops, everything the rollout
applied is reverted (newest first) and the summary printed; exit 130 (SIGINT) or 143 (SIGTERM).
A second Ctrl-C exits at once, naming what is left applied.
A process whose check failed has the code HEALTH_CHECK_FAILED in its result (--json).
Exit: 0 every process ok, 11 partial (some failed and were reverted), 12 failure (none applied).`;

export const rolloutCommand = {
  command: 'rollout <plan>',
  describe: 'Roll patches out to several processes: canary first, health checks, revert on failure',
  builder: (y: Argv) =>
    y
      .positional('plan', { type: 'string', demandOption: true, describe: 'the plan file (JSON)' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'check every patch against every target, change nothing (runs no health check)' })
      .example('$0 rollout plan.json', 'canary first, then the rest; a failing check reverts that process')
      .example('$0 rollout plan.json --dry-run --json', 'would each patch fit each process?')
      .epilog(PLAN_HELP),
  async run(argv: { plan: string; dryRun: boolean }, out: Out): Promise<number> {
    const { plan, baseDir } = loadPlan(argv.plan);
    let total = 0;
    let done = 0;
    // What is applied right now, per process (for a second Ctrl-C's last words).
    const applied = new Map<number, string[]>();
    const ac = new AbortController();
    let stoppedBy: NodeJS.Signals | undefined;
    onInterrupt(
      (sig) => {
        stoppedBy = sig;
        out.progress('');
        process.stderr.write(`${sig === 'SIGINT' ? 'Ctrl-C' : sig}: stopping the rollout and reverting what it applied (again to exit at once)\n`);
        ac.abort();
      },
      () => {
        const left = [...applied].filter(([, a]) => a.length).map(([pid, a]) => `process ${pid}: ${a.map((f) => path.basename(f)).join(', ')}`);
        return left.length ? `exiting at once; left applied: ${left.join('; ')} (undo with: hotload revert <pid> <patch>)` : 'exiting at once; nothing is left applied';
      },
    );
    const onEvent = (e: RolloutEvent) => {
      if (e.type === 'step' && 'apply' in e.step && e.ok && e.detail !== 'already applied') applied.set(e.pid, [...(applied.get(e.pid) ?? []), path.resolve(baseDir, e.step.apply)]);
      if (e.type === 'process-done' || e.type === 'process-reverted') applied.set(e.result.pid, e.result.applied);
      if (e.type === 'targets') total = e.pids.length;
      if (e.type === 'process-start') out.progress(`[${done}/${total}] process ${e.pid}${e.canary ? ' (canary)' : ''}...`);
      if (e.type === 'process-done') {
        done++;
        out.progress(`[${done}/${total}] process ${e.result.pid}: ${e.result.status}`);
      }
    };
    const res = await rollout(plan, { baseDir, dryRun: argv.dryRun, onEvent, signal: ac.signal });
    onInterrupt(() => undefined); // the summary below is written whatever comes now
    out.progress('');
    if (out.json) out.doc(res);
    else {
      const color = (r: ProcessResult) => (['applied', 'would-apply'].includes(r.status) ? out.green(r.status) : r.status === 'skipped' ? out.yellow(r.status) : out.red(r.status));
      const rows = [['PID', 'STATUS', 'CANARY', 'DETAIL'].map(out.bold)];
      for (const r of res.processes) {
        const detail = r.reason ?? r.applied.map((a) => path.basename(a)).join(', ');
        rows.push([String(r.pid), color(r), r.canary ? 'yes' : '', detail + (r.reverted.length ? ` (reverted ${r.reverted.map((a) => path.basename(a)).join(', ')})` : '')]);
      }
      for (const l of table(rows)) out.line(l);
      out.line(`${argv.dryRun ? 'dry run: ' : ''}${res.outcome} over ${res.processes.length} processes in ${res.ms} ms`);
      if (argv.dryRun) out.line('dry run: nothing was applied; no wait and no health check was run');
    }
    if (res.outcome === 'interrupted') {
      if (!out.json) process.stderr.write(`INTERRUPTED: the rollout was interrupted; what it applied was reverted${res.processes.some((r) => r.applied.length) ? ' except where a revert failed (see above)' : ''}\n`);
      return stoppedBy === 'SIGTERM' ? 143 : 130;
    }
    if (res.outcome === 'success') return 0;
    if (res.error) {
      // The rollout stopped itself (a callback threw, or a bug) and reverted what it applied.
      if (!out.json) process.stderr.write(`${res.error.code}: ${res.error.message}\nhint: ${res.error.hint}\n`);
      return new HotloadError(res.error.code, res.error.message).exitCode;
    }
    const err = new HotloadError(res.outcome === 'partial' ? 'ROLLOUT_PARTIAL' : 'ROLLOUT_FAILED', `rollout ${res.outcome}`);
    if (!out.json) process.stderr.write(`${err.code}: ${err.message}\nhint: ${err.hint}\n`);
    return err.exitCode;
  },
};
