// `hotload watch --json` run by a test: its events as they come, and ways to
// wait for them.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import { BIN, removeAtEnd, sleep } from './helpers';

const OUTCOMES = ['refused', 'build-failed', 'patched', 'no-change'];

export class Watch {
  readonly events: any[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  private buf = '';
  readonly child: ChildProcess;
  /** Watch's exit status, once it has exited and its output has been read to the end (every event is in `events`). */
  readonly closed: Promise<number>;
  /** `group`: watch leads a process group of its own, as a shell's job does (interruptGroup() is the terminal's Ctrl-C). */
  constructor(cwd: string, args: string[], opts: { group?: boolean } = {}) {
    this.child = spawn(process.execPath, [BIN, 'watch', '--json', ...args], { cwd, stdio: ['ignore', 'pipe', 'inherit'], detached: !!opts.group });
    this.closed = new Promise((r) => this.child.once('close', (code) => r(code ?? -1)));
    this.child.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      const lines = this.buf.split('\n');
      this.buf = lines.pop()!;
      for (const l of lines) {
        const e = JSON.parse(l);
        // The copies of the build and the patches stay after a watch whose process was killed while patched: the test run removes them.
        if (e.event === 'ready' && typeof e.snapshot === 'string') removeAtEnd(e.snapshot);
        this.events.push(e);
      }
    });
  }

  /** The next event of kind `kind` after the first `from` events; another outcome first is an error. */
  async event(kind: string, from: number, timeoutMs = 60000) {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.slice(from).find((x) => x.event === kind);
      if (e) return e;
      const other = this.events.slice(from).find((x) => OUTCOMES.includes(x.event) && x.event !== kind);
      if (other) throw new Error(`expected ${kind}, got ${JSON.stringify(other)}`);
      if (Date.now() > until) throw new Error(`no ${kind} event; events: ${JSON.stringify(this.events)}`);
      if (this.child.exitCode !== null) throw new Error(`watch exited ${this.child.exitCode}: ${JSON.stringify(this.events)}`);
      await sleep(20);
    }
  }

  /**
   * Until the watch runs nothing (the relink it starts after a save has
   * ended): no process under it but its helper, which starts its programs
   * (packages/api/src/spawner.ts). Throws if it stays busy.
   */
  async idle(): Promise<void> {
    const childrenOf = (pid: string): string[] => {
      try {
        return fs.readdirSync(`/proc/${pid}/task`).flatMap((t) => fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean));
      } catch {
        return []; // gone meanwhile
      }
    };
    const isHelper = (pid: string) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('spawner-child.js');
      } catch {
        return false;
      }
    };
    const busy = () => childrenOf(String(this.child.pid)).flatMap((c) => (isHelper(c) ? childrenOf(c) : [c]));
    for (let i = 0; i < 1500; i++) {
      if (busy().length === 0) return;
      await sleep(20);
    }
    throw new Error(`watch still runs ${busy().join(', ')} after 30 s`);
  }

  /** Ctrl-C at a terminal: SIGINT to every process of the job (watch's process group); resolves with watch's exit status. */
  async interruptGroup(): Promise<number> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number>((r) => this.child.once('exit', (code) => r(code ?? -1)));
    process.kill(-this.child.pid!, 'SIGINT');
    return exited;
  }

  /** Send watch `sig` (SIGINT: Ctrl-C; SIGTERM: kill); resolves with its exit status once its last event is read. */
  async stop(sig: NodeJS.Signals = 'SIGINT'): Promise<number> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
    return this.closed;
  }
}
