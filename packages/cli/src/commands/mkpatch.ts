// hotload mkpatch patch.c --target <elf> -o patch.so
import type { Argv } from 'yargs';
import { mkpatch } from '@hotload/api';
import { Out } from '../output';

export const mkpatchCommand = {
  command: 'mkpatch <source..>',
  describe: 'Compile a hand-written C patch against the exact build a process runs',
  builder: (y: Argv) =>
    y
      .positional('source', { type: 'string', array: true, demandOption: true, describe: 'C files of the patch' })
      .option('target', { type: 'string', demandOption: true, describe: 'the executable or library the process runs' })
      .option('o', { alias: 'output', type: 'string', demandOption: true, describe: 'the patch .so to write' })
      .option('cc', { type: 'string', describe: 'compiler (default $CC or cc)' })
      .option('cflags', { type: 'string', describe: 'extra compiler flags, space-separated' }),
  run(argv: { source: string[]; target: string; o: string; cc?: string; cflags?: string }, out: Out): number {
    const r = mkpatch({ sources: argv.source, target: argv.target, out: argv.o, cc: argv.cc, cflags: argv.cflags?.split(/\s+/).filter(Boolean) });
    if (out.json) {
      out.doc({ out: r.out, target: r.target, functions: r.plan.functions.map((f) => ({ old: f.old, new: f.new, status: f.fn.status })), statics: r.plan.refs.map((x) => x.name), notes: r.plan.notes });
      return 0;
    }
    out.line(`${out.green('wrote')} ${r.out}: ${r.plan.functions.map((f) => `${f.old} -> ${f.new}`).join(', ')} for ${r.target.module} (build-id ${r.target.buildId.slice(0, 16)}...)`);
    for (const n of r.plan.notes) out.line(`  ${out.yellow('note')}: ${n}`);
    return 0;
  },
};
