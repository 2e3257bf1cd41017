// hotload revert <pid> <patch> | --all
import type { Argv } from 'yargs';
import { HotloadError } from '@hotload/errors';
import { revert } from '@hotload/injector';
import { Out } from '../output';

export const revertCommand = {
  command: 'revert <pid> [patch]',
  describe: 'Put back what functions ran before a patch (the original code, or the patch below it)',
  builder: (y: Argv) =>
    y
      .positional('pid', { type: 'number', demandOption: true, describe: 'process id' })
      .positional('patch', { type: 'string', describe: 'the patch .so that was applied' })
      .option('all', { type: 'boolean', default: false, describe: 'return every function to its original code' }),
  run(argv: { pid: number; patch?: string; all: boolean }, out: Out): number {
    if (!argv.all && !argv.patch) throw new HotloadError('USAGE', 'name the patch to revert, or pass --all');
    const r = revert(argv.pid, argv.patch, { all: argv.all });
    if (out.json) {
      out.doc(r);
      return 0;
    }
    if (r.reverted.length === 0) out.line(`process ${r.pid}: nothing was patched`);
    for (const f of r.reverted) out.line(`${out.green('reverted')} ${f.name}: now runs ${f.now === 'original' ? 'its original code' : f.now}`);
    out.line(out.dim(`  threads stopped ${r.timings.stoppedMs.toFixed(3)} ms, total ${r.timings.totalMs.toFixed(1)} ms`));
    return 0;
  },
};
