// hotload revert <pid|pids|name> <patch> | --all
import type { Argv } from 'yargs';
import { HotloadError, RevertResult, revert } from '@hotload/api';
import { demangle } from '@hotload/elf';
import { Out } from '../output';
import { JSON_SHAPE, forEachPid, stopFigures } from './attach';

/** A revert's result with each C++ name's demangled form beside it (`demangled`), as attach and status give it. */
type Shown = Omit<RevertResult, 'reverted'> & { reverted: (RevertResult['reverted'][number] & { demangled?: string })[] };

function withDemangled(r: RevertResult): Shown {
  const names = demangle(r.reverted.map((f) => f.name));
  return { ...r, reverted: r.reverted.map((f) => (names.has(f.name) && names.get(f.name) !== f.name ? { ...f, demangled: names.get(f.name) } : f)) };
}

function printRevert(out: Out, r: Shown): void {
  if (r.reverted.length === 0) out.line(`process ${r.pid}: nothing was patched`);
  for (const f of r.reverted) out.line(`${out.green('reverted')} ${f.demangled ?? f.name} in process ${r.pid}: now runs ${f.now === 'original' ? 'its original code' : f.now}`);
  out.line(out.dim(`  ${stopFigures(r.timings, 'every thread')}; total ${r.timings.totalMs.toFixed(1)} ms`));
}

export const revertCommand = {
  command: 'revert <target> [patch]',
  describe: 'Put back what functions ran before a patch (the original code, or the patch below it)',
  builder: (y: Argv) =>
    y
      .positional('target', { type: 'string', demandOption: true, describe: 'a pid, pids separated by commas, or a process name' })
      .positional('patch', { type: 'string', describe: 'the patch .so that was applied' })
      .option('all', { type: 'boolean', default: false, describe: 'return every function to its original code' })
      .example('$0 revert 4242 fix.so', 'undo one patch (functions return to what ran before it)')
      .example('$0 revert server --all', 'every process named server runs its original code again')
      .epilog(JSON_SHAPE),
  run(argv: { target: string; patch?: string; all: boolean }, out: Out): number {
    if (!argv.all && !argv.patch) throw new HotloadError('USAGE', 'name the patch to revert, or pass --all');
    return forEachPid(String(argv.target), out, (pid) => withDemangled(revert(pid, argv.patch, { all: argv.all })), (r) => printRevert(out, r));
  },
};
