// hotload diff <old> <new>: what differs between two builds, function by function.
import type { Argv } from 'yargs';
import { HotloadError } from '@hotload/errors';
import { diffBuilds, refuseIfNotRunning } from '@hotload/patch';
import { ElfFile, demangle } from '@hotload/elf';
import { Out } from '../output';

/** What `--json` prints. */
const JSON_SHAPE = 'With --json: one document, {changed, added, removed, unchanged, data, refused, inlined, lineOnly, objects, demangled}; when a change cannot be patched, the same document with an `error` member {code: "UNPATCHABLE", message, hint, details} (exit status 4). An error before there is a diff (a missing file, --target not built from <old>) is {"error": ...} alone, as for every command.';

export const diffCommand = {
  command: 'diff <old> <new>',
  describe: 'Compare two builds function by function, relocations taken into account (object files, directories of them paired by path, or programs linked with -Wl,--emit-relocs)',
  builder: (y: Argv) =>
    y
      .positional('old', { type: 'string', demandOption: true, describe: 'the build the process runs (a file or a directory)' })
      .positional('new', { type: 'string', demandOption: true, describe: 'the rebuilt file, or directory' })
      .option('target', { type: 'string', describe: 'the program or library the process runs: first check that <old> is the build it was linked from, as mkpatch --from does' })
      .example('$0 diff build.running build', 'what a patch of the rebuild would replace')
      .example('$0 diff build.running build --target build.running/server', 'the same, after checking build.running is what ./server was linked from')
      .epilog(JSON_SHAPE),
  run(argv: { old: string; new: string; target?: string }, out: Out): number {
    if (argv.target) refuseIfNotRunning(argv.old, argv.target, ElfFile.open(argv.target));
    const d = diffBuilds(argv.old, argv.new);
    const names = demangle([...d.changed, ...d.added, ...d.removed, ...d.data.changed, ...d.data.added, ...d.data.removed]);
    const cxx = (xs: string[]) => xs.map((x) => names.get(x) ?? x);
    if (!out.json) {
      const list = (label: string, xs: string[], paint: (s: string) => string) => {
        if (xs.length) out.line(`${paint(label)} ${xs.join(', ')}`);
      };
      list('changed functions:', d.changed.map((f) => (d.inlined[f] ? `${names.get(f) ?? f} (has ${cxx(d.inlined[f]).join(', ')} inlined)` : names.get(f) ?? f)), out.yellow);
      list('added functions:', cxx(d.added), out.green);
      list('removed functions:', cxx(d.removed), out.red);
      list('changed data:', cxx(d.data.changed), out.yellow);
      list('added data:', cxx(d.data.added), out.green);
      list('removed data:', cxx(d.data.removed), out.red);
      const objects = d.objects.compared + d.objects.identical > 1 ? ` (in ${d.objects.compared} changed object files; ${d.objects.identical} identical ones skipped)` : '';
      out.line(`${d.changed.length} changed, ${d.added.length} added, ${d.removed.length} removed, ${d.unchanged} unchanged functions${objects}`);
      if (d.lineOnly.length) out.line(`${out.dim('note')}: ${d.lineOnly.length} function${d.lineOnly.length === 1 ? '' : 's'} changed only by line numbers (lines were added or removed above ${d.lineOnly.length === 1 ? 'it' : 'them'}; __LINE__, as assert() uses it): ${cxx(d.lineOnly).join(', ')}`);
    }
    const refusal = d.refused.length
      ? new HotloadError('UNPATCHABLE', `${d.refused.length} change${d.refused.length === 1 ? '' : 's'} cannot be patched into a running process`, {
          details: d.refused.map((r) => `${r.symbol}: ${r.reason}`),
          hint: 'Restart the process with the new build for these changes; there is no --force.',
        })
      : undefined;
    // One shape with --json: the diff, and with a refusal the same diff plus `error` (exit status 4).
    if (out.json) {
      out.doc({ ...d, demangled: Object.fromEntries(names), ...(refusal ? { error: refusal.toJSON() } : {}) });
      return refusal ? refusal.exitCode : 0;
    }
    if (refusal) throw refusal;
    return 0;
  },
};
