// hotload post <elf>: rewrite entry NOPs to `66 90` and record the pad index in
// the file. Idempotent.
import type { Argv } from 'yargs';
import { HotloadError } from '@hotload/errors';
import { postFile } from '@hotload/elf';
import { Out } from '../output';
import { summaryLine } from './index-cmd';

export const postCommand = {
  command: 'post <elf..>',
  describe: 'Make a linked file hotpatch-friendly: single 2-byte entry NOPs and a recorded pad index',
  builder: (y: Argv) => y.positional('elf', { type: 'string', array: true, demandOption: true, describe: 'files to post, in place' }),
  run(argv: { elf: string[] }, out: Out): number {
    const results = [];
    for (const file of argv.elf) {
      const r = postFile(file);
      if (r.index.padEntries === 0) throw new HotloadError('ELF_NO_PADS', `${file}: no __patchable_function_entries section`);
      results.push({ file, rewritten: r.rewritten, changed: r.changed, summary: r.index.summary });
      out.line(`${file}: ${r.changed ? `posted, ${r.rewritten} entries rewritten to 66 90` : 'already posted, unchanged'}; ${summaryLine(r.index)}`);
    }
    if (out.json) out.doc(results);
    return 0;
  },
};
