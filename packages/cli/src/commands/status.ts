// hotload status <pid>
import type { Argv } from 'yargs';
import { status } from '@hotload/api';
import { Out } from '../output';
import { pidArg } from '../args';

export const statusCommand = {
  command: 'status <pid>',
  describe: 'Show the functions a process runs from patches, read from the process itself',
  builder: (y: Argv) => y.positional('pid', { type: 'string', demandOption: true, describe: 'process id' }),
  run(argv: { pid: string }, out: Out): number {
    const r = status(pidArg(argv.pid));
    if (out.json) {
      out.doc(r);
      return 0;
    }
    if (r.functions.length === 0) {
      out.line(`process ${r.pid}: no patch applied${r.patches.length ? ` (${r.patches.length} reverted patch${r.patches.length === 1 ? '' : 'es'} still mapped)` : ''}`);
      return 0;
    }
    out.line(`process ${r.pid}: ${r.functions.length} function${r.functions.length === 1 ? '' : 's'} patched`);
    for (const f of r.functions) {
      out.line(`  ${out.bold(f.name)} (${f.module})`);
      f.stack.forEach((e, i) => out.line(`    ${i === 0 ? 'runs ' : 'over '} ${e.function} ${out.dim(e.address)} from ${e.source ?? e.patch}`));
    }
    out.line('patches:');
    for (const p of r.patches) {
      out.line(`  ${p.source ?? p.staged}  build-id ${p.buildId ?? '?'}  applied ${p.appliedAt ?? '?'}  ${p.inForce.length ? `in force: ${p.inForce.join(', ')}` : out.dim('reverted')}`);
      if (p.source) out.line(out.dim(`    loaded from ${p.staged}`));
      if (p.loadedBy === 'hotload') out.line(out.dim(`    mapped by hotload, not dlopen; in gdb: add-symbol-file ${p.staged} -o ${p.bias}`));
    }
    return 0;
  },
};
