// hotload ps: the processes of this user that can be patched.
import type { Argv } from 'yargs';
import { ps } from '@hotload/api';
import { Out, table } from '../output';

export const psCommand = {
  command: 'ps',
  describe: 'List the processes of this user that can be patched, with how many patches each has in force (and reverted ones still mapped)',
  builder: (y: Argv) => y,
  run(_argv: unknown, out: Out): number {
    const list = ps();
    if (out.json) {
      out.doc(list);
      return 0;
    }
    if (list.length === 0) {
      out.line('no running process of yours has a module built with -fpatchable-function-entry');
      return 0;
    }
    // PATCHES: in force, as `status` shows them; reverted copies stay mapped and are counted apart.
    const rows = [['PID', 'PATCHES', 'COMMAND', 'MODULES WITH PADS'].map(out.bold)];
    for (const p of list) rows.push([String(p.pid), `${p.patches}${p.reverted ? out.dim(` (+${p.reverted} reverted, mapped)`) : ''}`, p.command, p.modules.join(', ')]);
    for (const l of table(rows)) out.line(l);
    return 0;
  },
};
