// The small process a Spawner forks (spawner.ts): it starts the programs the
// watch process asks for and answers with their exit status and output. Its
// own memory is small, so each fork the kernel makes for it is cheap; the
// watch process, holding two builds, would pay several milliseconds per
// program.
//
// Protocol (Node's IPC channel, JSON), one message per line of work:
//   in:  { id, file, args, cwd, env?, timeoutMs? }  start a program
//        { kill: id }                               SIGTERM to that program
//   out: { id, status, stdout, output, error? }     it has exited (output: stdout and stderr as they came)
// It ends when the channel closes (its parent exited or closed it), and
// ignores SIGINT: a Ctrl-C reaches the whole process group, and the watch
// process still has a relink to run through it as it ends.

import * as cp from 'child_process';

interface Start {
  id: number;
  file: string;
  args: string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

const running = new Map<number, cp.ChildProcess>();

process.on('SIGINT', () => {});
process.on('disconnect', () => {
  for (const c of running.values()) c.kill('SIGTERM');
  process.exit(0);
});
process.on('message', (m: Start | { kill: number }) => {
  if ('kill' in m) {
    running.get(m.kill)?.kill('SIGTERM');
    return;
  }
  let child: cp.ChildProcess;
  try {
    child = cp.spawn(m.file, m.args, { cwd: m.cwd, env: m.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: m.timeoutMs });
  } catch (e) {
    process.send!({ id: m.id, status: null, stdout: '', output: '', error: String(e) });
    return;
  }
  running.set(m.id, child);
  let stdout = '';
  let output = '';
  let error: string | undefined;
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    output += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  let answered = false;
  const answer = (status: number | null) => {
    if (answered) return;
    answered = true;
    running.delete(m.id);
    process.send!({ id: m.id, status: error ? null : status, stdout, output, ...(error ? { error } : {}) });
  };
  // A program that cannot start gives 'error' (and maybe no 'close').
  child.on('error', (e) => {
    error = String(e);
    if (child.pid === undefined) answer(null);
  });
  child.on('close', answer);
});
