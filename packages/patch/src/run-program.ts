// Running a program without waiting for it: the caller goes on working (mkpatch
// compares type layouts while the linker runs) and the answer comes when the
// program has exited. watch passes its own Runner (packages/api/src/spawner.ts),
// which has a small helper process start programs for less.

import * as cp from 'child_process';

export interface Ran {
  status: number | null;
  /** Standard output alone. */
  stdout: string;
  /** Standard output and error, as they came. */
  output: string;
  /** Why it could not start, if so. */
  error?: string;
}

export interface RunOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /**
   * Its abort stops the program if it is running then, with everything it
   * started (SIGTERM to its process group). A run asked for with a signal
   * already aborted runs to its end.
   */
  signal?: AbortSignal;
  timeoutMs?: number;
  /**
   * Start it in a process group of its own even without a signal: a Ctrl-C
   * at the terminal does not reach it (watch's helper starts every program
   * so; watch stops what it must itself, and lets a relink finish).
   */
  ownGroup?: boolean;
  /** Told the program's pid once it has started. */
  onStart?: (pid: number) => void;
}

/** Starts a program; resolves, once, when it has exited (status null: it could not start or was killed). */
export type Runner = (file: string, args: string[], opts: RunOptions) => Promise<Ran>;

/** Run a program from this process. */
export const runProgram: Runner = (file, args, opts) =>
  new Promise((resolve) => {
    // Given a signal, the program and what it starts (a shell's compiler, make's
    // jobs) are a process group of their own, and an abort stops all of them:
    // a compiler left running after its shell would write its object later
    // (while the program is relinked). Without one (nor ownGroup), they stay
    // in this process's group, where a Ctrl-C at the terminal reaches them.
    const child = cp.spawn(file, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs, detached: !!opts.signal || !!opts.ownGroup });
    let stdout = '';
    let output = '';
    let error: string | undefined;
    let done = false;
    if (child.pid !== undefined) opts.onStart?.(child.pid);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      output += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    const abort = () => {
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {
        child.kill('SIGTERM'); // not started, or its group already gone
      }
    };
    opts.signal?.addEventListener('abort', abort);
    const finish = (status: number | null) => {
      if (done) return;
      done = true;
      opts.signal?.removeEventListener('abort', abort);
      resolve({ status: error ? null : status, stdout, output, ...(error ? { error } : {}) });
    };
    // A program that cannot start gives 'error' (and maybe no 'close').
    child.on('error', (e) => {
      error = String(e);
      if (child.pid === undefined) finish(null);
    });
    child.on('close', finish);
  });
