// hotload status <pid|pids|name>
import type { Argv } from 'yargs';
import { StatusResult, status } from '@hotload/api';
import { demangle } from '@hotload/elf';
import { Out } from '../output';
import { JSON_SHAPE, forEachPid } from './attach';

export const statusCommand = {
  command: 'status <target>',
  describe: 'Show the functions processes run from patches, read from each process itself',
  builder: (y: Argv) =>
    y
      .positional('target', { type: 'string', demandOption: true, describe: 'a pid, pids separated by commas, or a process name' })
      .example('$0 status 4242', 'what process 4242 runs from patches')
      .example('$0 status server --json', 'the same for every process named server')
      .epilog(JSON_SHAPE),
  run(argv: { target: string }, out: Out): number {
    return forEachPid(String(argv.target), out, status, (r) => printStatus(out, r));
  },
};

function printStatus(out: Out, r: StatusResult): void {
  {
    const mapped = `${r.reverted.mapped} reverted patch${r.reverted.mapped === 1 ? '' : 'es'} still mapped`;
    const why = () => {
      if (r.reverted.mapped) out.line(out.dim(`  ${r.reverted.why}`));
    };
    if (r.functions.length === 0) {
      out.line(`process ${r.pid}: no patch applied${r.reverted.mapped ? ` (${mapped})` : ''}`);
      why();
      return;
    }
    const names = demangle([...r.functions.flatMap((f) => f.stack.map((e) => e.function)), ...r.patches.flatMap((p) => p.inForce)]);
    const cxx = (x: string) => names.get(x) ?? x;
    out.line(`process ${r.pid}: ${r.functions.length} function${r.functions.length === 1 ? '' : 's'} patched`);
    for (const f of r.functions) {
      out.line(`  ${out.bold(f.demangled ?? f.name)} (${f.module})`);
      f.stack.forEach((e, i) => out.line(`    ${i === 0 ? 'runs ' : 'over '} ${cxx(e.function)} ${out.dim(e.address)} from ${e.source ?? e.patch}`));
    }
    out.line('patches:');
    for (const p of r.patches) {
      out.line(`  ${p.source ?? p.staged}  build-id ${p.buildId ?? '?'}  applied ${p.appliedAt ?? '?'}  ${p.inForce.length ? `in force: ${p.inForce.map(cxx).join(', ')}` : out.dim('reverted')}`);
      if (p.description) out.line(`    ${p.description}`);
      if (p.source) out.line(out.dim(`    loaded from ${p.staged}`));
      if (p.loadedBy === 'hotload' && p.debuggers) out.line(out.dim('    mapped by hotload, not dlopen; debuggers see it through the GDB JIT interface'));
      else if (p.loadedBy === 'hotload') out.line(out.dim(`    mapped by hotload, not dlopen, and not registered with debuggers; in gdb: add-symbol-file ${p.staged} -o ${p.bias}`));
    }
    if (r.reverted.mapped) out.line(mapped);
    why();
  }
}
