// hotload index <elf> [--json]: the pad index of a file, as a table and a summary.
import type { Argv } from 'yargs';
import { ElfFile, FunctionStatus, PadIndex, demangle, indexPads, readRecordedIndex } from '@hotload/elf';
import { Out, hex, table } from '../output';

export function loadIndex(file: string, recompute: boolean): { index: PadIndex; recorded: boolean } {
  const elf = ElfFile.open(file);
  const rec = recompute ? undefined : readRecordedIndex(elf);
  return { index: rec ?? indexPads(elf), recorded: !!rec };
}

export function statusColor(out: Out, s: FunctionStatus): string {
  if (s === 'patchable') return out.green(s);
  if (s === 'no-pad' || s === 'modified') return out.red(s);
  if (s === 'clone') return out.yellow(s);
  return out.dim(s);
}

export function summaryLine(idx: PadIndex): string {
  const s = idx.summary;
  const parts = (Object.keys(s) as FunctionStatus[]).filter((k) => s[k] > 0).map((k) => `${s[k]} ${k}`);
  return `${idx.functions.length} functions, ${idx.padEntries} pads: ${parts.join(', ')}`;
}

/**
 * The FUNCTION column's widest entry: a C++ template instance's name runs to
 * thousands of characters, and every row was padded to it. Longer names keep
 * their start and end (`--json` has them whole).
 */
const NAME_WIDTH = 80;
export function elide(s: string, width: number): string {
  if (s.length <= width) return s;
  const head = Math.ceil((width - 3) / 2);
  return `${s.slice(0, head)}...${s.slice(s.length - (width - 3 - head))}`;
}

export const indexCommand = {
  command: 'index <elf>',
  describe: 'List every function of an ELF file with its pad and whether it can be patched',
  builder: (y: Argv) =>
    y
      .positional('elf', { type: 'string', demandOption: true, describe: 'executable or shared library' })
      .option('recompute', { type: 'boolean', default: false, describe: 'ignore the index recorded by `hotload post`' })
      .epilog(`Names longer than ${NAME_WIDTH} characters are shortened in the middle; --json gives them whole.`),
  run(argv: { elf: string; recompute: boolean }, out: Out): number {
    const { index, recorded } = loadIndex(argv.elf, argv.recompute);
    const names = demangle(index.functions.map((f) => f.name));
    if (out.json) {
      // Every function as indexed, a C++ one with its demangled name too.
      out.doc({ file: argv.elf, recorded, ...index, functions: index.functions.map((f) => (names.has(f.name) ? { ...f, demangled: names.get(f.name) } : f)) });
      return 0;
    }
    const rows = [['FUNCTION', 'ADDRESS', 'SIZE', 'STATUS', 'NOTE'].map(out.bold)];
    const shown = (n: string) => names.get(n) ?? n;
    for (const f of index.functions) {
      const note = [f.endbr ? 'endbr64' : '', f.posted ? 'posted' : '', f.aliases.length ? `alias ${f.aliases.join(',')}` : '', f.clones ? `clones ${f.clones.join(',')}` : '', f.status === 'clone' || f.status === 'part' ? `of ${f.origin}` : '', f.status === 'thunk' ? `to ${shown(f.origin!)}` : '']
        .filter(Boolean)
        .join('; ');
      rows.push([elide(shown(f.name), NAME_WIDTH), hex(f.address), String(f.size), statusColor(out, f.status), note]);
    }
    for (const l of table(rows)) out.line(l);
    out.line();
    out.line(`${argv.elf}: ${summaryLine(index)}${recorded ? ' (recorded by hotload post)' : ''}`);
    return 0;
  },
};
