// Starting programs from a long-running process, cheaply. The kernel's fork
// copies the caller's page tables, so starting a program costs in proportion
// to the caller's memory: about 2 ms from a fresh Node process, 8 ms from a
// watch process holding two builds of Lua, more for larger programs. watch
// starts three programs per save on its critical path (make's dry run, the
// compiler, the patch's link), so it has a small helper process start them
// (spawner-child.ts) and only sends it a message.
//
// Invariants: every run resolves, once, with the program's exit status (null
// when it could not start or was killed) and its output; when the helper
// cannot start or dies, runs go on in this process. A run the helper was
// doing when it died is started again here once the program it started has
// ended (it goes on without the helper; two compilers writing one object at
// once could leave it mixed): compiles, dry runs and links can be repeated.

import * as cp from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { processExists } from '@hotload/injector';
import { Ran, RunOptions, Runner, runProgram } from '@hotload/patch';

export type { Ran, RunOptions, Runner } from '@hotload/patch';

interface Pending {
  file: string;
  args: string[];
  opts: RunOptions;
  resolve: (r: Ran) => void;
  abort?: () => void;
  /** The program's pid, once the helper has started it. */
  pid?: number;
}

/** A helper process that starts programs; `run` is a Runner. Close it when done. */
export class Spawner {
  private child?: cp.ChildProcess;
  private pending = new Map<number, Pending>();
  private next = 1;

  constructor() {
    try {
      // Compiled beside this file; run from the sources (ts-jest), the compiled one in dist.
      const script = [path.join(__dirname, 'spawner-child.js'), path.join(__dirname, '..', 'dist', 'spawner-child.js')].find((f) => fs.existsSync(f));
      if (!script) return;
      // execArgv: [] — not this process's --inspect or --cpu-prof.
      const child = cp.fork(script, [], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'json' });
      child.on('message', (m: (Ran & { id: number }) | { started: number; pid: number }) => {
        if ('started' in m) {
          const p = this.pending.get(m.started);
          if (p) p.pid = m.pid;
        } else this.answered(m);
      });
      child.on('exit', () => this.lost());
      child.on('error', () => this.lost());
      child.unref();
      this.child = child;
      this.idle();
    } catch {
      this.child = undefined; // runs go on in this process
    }
  }

  readonly run: Runner = (file, args, opts) => {
    const child = this.child;
    if (!child?.connected) return runProgram(file, args, { ...opts, ownGroup: true }); // as the helper starts them
    return new Promise((resolve) => {
      const id = this.next++;
      const p: Pending = { file, args, opts, resolve };
      if (opts.signal) {
        // As runProgram: an abort stops a run going on then; one asked for after it runs to its end.
        p.abort = () => child.connected && child.send({ kill: id });
        opts.signal.addEventListener('abort', p.abort);
      }
      this.pending.set(id, p);
      this.busy();
      child.send({ id, file, args, cwd: opts.cwd, env: opts.env, timeoutMs: opts.timeoutMs, abortable: !!opts.signal && !opts.signal.aborted });
    });
  };

  /** The helper's pid (undefined: runs go on in this process). */
  get pid(): number | undefined {
    return this.child?.connected ? this.child.pid : undefined;
  }

  /** Stop the helper (the programs it runs for a caller that gave a signal are stopped, the others run to their end); later runs go on in this process. */
  close(): void {
    const child = this.child;
    this.child = undefined;
    if (child?.connected) child.disconnect();
    this.lost();
  }

  private answered(m: Ran & { id: number }): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (p.abort) p.opts.signal?.removeEventListener('abort', p.abort);
    if (this.pending.size === 0) this.idle();
    p.resolve({ status: m.status, stdout: m.stdout, output: m.output, ...(m.error ? { error: m.error } : {}) });
  }

  /** The helper is gone: what it was running is run here. */
  private lost(): void {
    this.child = undefined;
    const left = [...this.pending.values()];
    this.pending.clear();
    for (const p of left) {
      if (p.abort) p.opts.signal?.removeEventListener('abort', p.abort);
      ended(p.pid).then(() => runProgram(p.file, p.args, { ...p.opts, ownGroup: true }).then(p.resolve));
    }
  }

  // The channel keeps this process alive only while a run waits for its answer.
  private busy(): void {
    (this.child?.channel as { ref?: () => void } | undefined)?.ref?.();
  }
  private idle(): void {
    (this.child?.channel as { unref?: () => void } | undefined)?.unref?.();
  }
}

/** Resolves once process `pid` (not a child of this one: the dead helper's) has ended, a zombie included; at once without a pid. */
async function ended(pid: number | undefined): Promise<void> {
  while (pid !== undefined && processExists(pid)) await new Promise((r) => setTimeout(r, 10));
}
