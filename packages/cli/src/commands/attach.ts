// hotload attach <pid> patch.so: load a patch into a running process and
// redirect its functions.
import type { Argv } from 'yargs';
import { attach, AttachResult } from '@hotload/injector';
import { Out } from '../output';

export function printAttach(out: Out, r: AttachResult): void {
  out.line(`${out.green('patched')} process ${r.pid} with ${r.patch} (${r.functions.length} function${r.functions.length === 1 ? '' : 's'})`);
  for (const f of r.functions) out.line(`  ${f.name} ${out.dim(f.old)} -> ${f.new}${f.previous !== 'original' ? out.dim(` (stacked on ${f.previous})`) : ''}`);
  for (const n of r.notes) out.line(`  ${out.yellow('note')}: ${n}`);
  out.line(out.dim(`  threads stopped ${r.timings.stoppedMs.toFixed(3)} ms in all (longest ${r.timings.maxStopMs.toFixed(3)} ms), dlopen ${r.timings.loadMs.toFixed(2)} ms on thread ${r.hostThread} (paused ${r.timings.hostPausedMs.toFixed(2)} ms), total ${r.timings.totalMs.toFixed(1)} ms`));
}

export const attachCommand = {
  command: 'attach <pid> <patch>',
  describe: 'Load a patch .so into a running process and redirect the functions it replaces',
  builder: (y: Argv) =>
    y
      .positional('pid', { type: 'number', demandOption: true, describe: 'process id' })
      .positional('patch', { type: 'string', demandOption: true, describe: 'patch made by `hotload mkpatch`' })
      .option('allow-unsafe-file', { type: 'boolean', default: false, describe: 'accept a patch file that other users could write' })
      .option('timeout', { type: 'number', default: 3000, describe: 'ms to wait for a safe moment to load the patch' }),
  run(argv: { pid: number; patch: string; allowUnsafeFile: boolean; timeout: number }, out: Out): number {
    const r = attach(argv.pid, argv.patch, { allowUnsafeFile: argv.allowUnsafeFile, safePointTimeoutMs: argv.timeout, onProgress: (s) => out.progress(s) });
    out.progress('');
    if (out.json) out.doc(r);
    else printAttach(out, r);
    return 0;
  },
};
