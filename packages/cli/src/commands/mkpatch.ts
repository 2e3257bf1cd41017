// hotload mkpatch patch.c --target <elf> -o patch.so           (a hand-written patch)
// hotload mkpatch --from <old build> --to <new build> -o patch.so  (a patch from a rebuild)
import type { Argv } from 'yargs';
import { HotloadError, findProgram, mkpatch, mkpatchFromBuilds } from '@hotload/api';
import { demangle } from '@hotload/elf';
import { Out } from '../output';

interface Args {
  source?: string[];
  target?: string;
  from?: string;
  to?: string;
  o: string;
  cc?: string;
  cflags?: string;
  description?: string;
}

export const mkpatchCommand = {
  command: 'mkpatch [source..]',
  valueOptions: ['cflags', 'cc', 'description'],
  describe: 'Make a patch: compile hand-written C against the running build, or diff two builds (--from/--to)',
  builder: (y: Argv) =>
    y
      .positional('source', { type: 'string', array: true, describe: 'C files of a hand-written patch' })
      .option('from', { type: 'string', describe: 'the build the process runs: its object files (a .o, or a directory of them)' })
      .option('to', { type: 'string', describe: 'the new build: its object files, paired with --from by relative path' })
      .option('target', { type: 'string', describe: 'the executable or library the process runs (with --from: default, the one program in the --from directory)' })
      .option('o', { alias: 'output', type: 'string', demandOption: true, describe: 'the patch .so to write' })
      .option('cc', { type: 'string', describe: 'compiler/linker driver (default $CC or cc)' })
      .option('cflags', { type: 'string', describe: 'extra compiler flags, space-separated (hand-written patches); `--cflags "-I a -DX"` and `--cflags="-I a"` both work' })
      .option('description', { type: 'string', describe: 'what the patch is, in words: shown by status, ps and --json (as HOTLOAD_DESCRIPTION("...") in the source)' })
      .example('$0 mkpatch fix.c --target ./server -o fix.so', 'compile a hand-written patch')
      .example('$0 mkpatch --from build.running --to build -o p.so', 'patch the functions that changed between two builds')
      .epilog('Exit status 9: the two builds run the same code (nothing to patch).'),
  async run(argv: Args, out: Out): Promise<number> {
    if (argv.from !== undefined || argv.to !== undefined) {
      if (!argv.from || !argv.to) throw new HotloadError('USAGE', 'give both --from (the build the process runs) and --to (the new build)');
      if (argv.source?.length) throw new HotloadError('USAGE', 'give either C sources or --from/--to, not both');
      const target = argv.target ?? findProgram(argv.from);
      const r = await mkpatchFromBuilds({ from: argv.from, to: argv.to, target, out: argv.o, cc: argv.cc, description: argv.description });
      const names = demangle([...r.replaced, ...r.added]);
      if (out.json) {
        out.doc({ out: r.out, target: r.target, replaced: r.replaced, added: r.added, notes: r.plan.notes, otherModules: r.otherModules, demangled: Object.fromEntries(names) });
        return 0;
      }
      const cxx = (xs: string[]) => xs.map((x) => names.get(x) ?? x).join(', ');
      out.line(`${out.green('wrote')} ${r.out}: replaces ${cxx(r.replaced)}${r.added.length ? `; adds ${cxx(r.added)}` : ''} in ${r.target.module} (build-id ${r.target.buildId.slice(0, 16)}...)`);
      for (const n of r.plan.notes) out.line(`  ${out.yellow('note')}: ${n}`);
      if (r.otherModules.length) out.line(`  ${out.dim('note')}: left out ${r.otherModules.length} changed object file${r.otherModules.length === 1 ? '' : 's'} of other modules: ${r.otherModules.join(', ')}`);
      return 0;
    }
    if (!argv.source?.length) throw new HotloadError('USAGE', 'name the C files of the patch, or give --from and --to');
    if (!argv.target) throw new HotloadError('USAGE', 'name the program the process runs with --target');
    const r = mkpatch({ sources: argv.source, target: argv.target, out: argv.o, cc: argv.cc, cflags: argv.cflags?.split(/\s+/).filter(Boolean), description: argv.description });
    if (out.json) {
      out.doc({ out: r.out, target: r.target, functions: r.plan.functions.map((f) => ({ old: f.old, new: f.new, status: f.fn.status })), statics: r.plan.refs.map((x) => x.name), notes: r.plan.notes });
      return 0;
    }
    const names = demangle(r.plan.functions.flatMap((f) => [f.old, f.new]));
    const cxx = (x: string) => names.get(x) ?? x;
    out.line(`${out.green('wrote')} ${r.out}: ${r.plan.functions.map((f) => (f.old === f.new ? `${cxx(f.old)} (redefined)` : `${cxx(f.old)} -> ${cxx(f.new)}`)).join(', ')} for ${r.target.module} (build-id ${r.target.buildId.slice(0, 16)}...)`);
    for (const n of r.plan.notes) out.line(`  ${out.yellow('note')}: ${n}`);
    return 0;
  },
};
