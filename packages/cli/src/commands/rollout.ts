// hotload rollout <plan.json>: apply patches across processes, canary first,
// with health checks and an automatic way back.
import * as path from 'path';
import type { Argv } from 'yargs';
import { HotloadError, ProcessResult, RolloutEvent, loadPlan, rollout } from '@hotload/api';
import { Out, table } from '../output';

const PLAN_HELP = `Plan (JSON): {"targets": {"pids": [..]} | {"name": "server"} | {"exe": "./server"} | {"buildId": ".."},
  "canary": 1, "parallel": 4, "healthCheck": "./check.sh",
  "steps": [{"apply": "fix.so"}, {"wait": 200}, {"check": "cmd"}, {"revert": "old.so"}]}
Checks run under sh -c with HOTLOAD_PID set; exit 0 is healthy. On failure, what the rollout applied
to that process is reverted; when the canary fails, nothing else is touched.
Exit: 0 every process ok, 11 partial (some failed and were reverted), 12 failure (none applied).`;

export const rolloutCommand = {
  command: 'rollout <plan>',
  describe: 'Roll patches out to several processes: canary first, health checks, revert on failure',
  builder: (y: Argv) =>
    y
      .positional('plan', { type: 'string', demandOption: true, describe: 'the plan file (JSON)' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'show what would happen, change nothing' })
      .epilog(PLAN_HELP),
  async run(argv: { plan: string; dryRun: boolean }, out: Out): Promise<number> {
    const { plan, baseDir } = loadPlan(argv.plan);
    let total = 0;
    let done = 0;
    const onEvent = (e: RolloutEvent) => {
      if (e.type === 'targets') total = e.pids.length;
      if (e.type === 'process-start') out.progress(`[${done}/${total}] process ${e.pid}${e.canary ? ' (canary)' : ''}...`);
      if (e.type === 'process-done') {
        done++;
        out.progress(`[${done}/${total}] process ${e.result.pid}: ${e.result.status}`);
      }
    };
    const res = await rollout(plan, { baseDir, dryRun: argv.dryRun, onEvent });
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
    }
    if (res.outcome === 'success') return 0;
    const err = new HotloadError(res.outcome === 'partial' ? 'ROLLOUT_PARTIAL' : 'ROLLOUT_FAILED', `rollout ${res.outcome}`);
    if (!out.json) process.stderr.write(`${err.code}: ${err.message}\nhint: ${err.hint}\n`);
    return err.exitCode;
  },
};
