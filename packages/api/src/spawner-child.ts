// The small process a Spawner forks (spawner.ts): it starts the programs the
// watch process asks for and answers with their exit status and output. Its
// own memory is small, so each fork the kernel makes for it is cheap; the
// watch process, holding two builds, would pay several milliseconds per
// program.
//
// Protocol (Node's IPC channel, JSON), one message per line of work:
//   in:  { id, file, args, cwd, env?, timeoutMs?, abortable? }  start a program
//        { kill: id }                               SIGTERM to that program and what it started
//   out: { started: id, pid }                        it runs, as process `pid`
//        { id, status, stdout, output, error? }     it has exited (output: stdout and stderr as they came)
// It ends when the channel closes (its parent exited or closed it; the
// abortable programs are stopped then, the others run to their end), and
// ignores SIGINT: a Ctrl-C reaches the whole process group, and the watch
// process still has a relink to run through it as it ends. Every program it
// starts is a process group of its own, out of the terminal's reach: watch
// stops those it must (a compile), and lets the others (a relink) finish.

import { runProgram } from '@hotload/patch';

interface Start {
  id: number;
  file: string;
  args: string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Stopped by a { kill } or when the channel closes (the watch process gave it a signal). */
  abortable?: boolean;
}

/** The runs going on, by id: each one's abort. */
const running = new Map<number, AbortController>();

process.on('SIGINT', () => {});
process.on('disconnect', () => {
  for (const a of running.values()) a.abort();
  // Once the programs have had their SIGTERM.
  setImmediate(() => process.exit(0));
});
process.on('message', (m: Start | { kill: number }) => {
  if ('kill' in m) {
    running.get(m.kill)?.abort();
    return;
  }
  const abort = m.abortable ? new AbortController() : undefined;
  if (abort) running.set(m.id, abort);
  // The parent is told each program's pid: if this helper dies, it waits for them to end before it runs them again itself.
  const onStart = (pid: number) => process.connected && process.send!({ started: m.id, pid });
  runProgram(m.file, m.args, { cwd: m.cwd, env: m.env, timeoutMs: m.timeoutMs, signal: abort?.signal, ownGroup: true, onStart }).then((r) => {
    running.delete(m.id);
    if (process.connected) process.send!({ id: m.id, ...r });
  });
});
