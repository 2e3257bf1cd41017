// hotload check <elf>: exit non-zero when any function cannot be patched, listing
// every such function with its reason and a hint (all of them, not the first).
import type { Argv } from 'yargs';
import { HotloadError } from '@hotload/errors';
import { unpatchable } from '@hotload/elf';
import { Out } from '../output';
import { loadIndex, summaryLine } from './index-cmd';

export const checkCommand = {
  command: 'check <elf>',
  describe: 'Fail unless every function of an ELF file has a sound pad',
  builder: (y: Argv) => y.positional('elf', { type: 'string', demandOption: true, describe: 'executable or shared library' }),
  run(argv: { elf: string }, out: Out): number {
    const { index } = loadIndex(argv.elf, true);
    const bad = unpatchable(index);
    const clones = index.functions.filter((f) => f.status === 'clone');
    if (index.padEntries === 0) {
      throw new HotloadError('ELF_NO_PADS', `${argv.elf}: no __patchable_function_entries section; nothing in it can be patched`);
    }
    if (!out.json) {
      for (const f of clones) out.line(`${out.yellow('note')}: ${f.name}: ${f.reason}`);
      out.line(`${argv.elf}: ${summaryLine(index)}`);
    }
    if (bad.length > 0) {
      // With --json the error document (details = one line per function) is the output.
      throw new HotloadError('UNPATCHABLE', `${argv.elf}: ${bad.length} function${bad.length === 1 ? '' : 's'} cannot be patched`, {
        details: bad.map((f) => `${f.name}: ${f.reason}${f.hint ? ` (${f.hint})` : ''}`),
      });
    }
    if (out.json) out.doc({ file: argv.elf, ok: true, summary: index.summary, clones });
    out.line(out.green('ok: every function can be patched'));
    return 0;
  },
};
