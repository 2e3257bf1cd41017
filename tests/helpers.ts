// Shared by the end-to-end tests: run the real CLI, start real target
// processes and watch what they print, read their memory and state.
import { ChildProcess, execFile, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export const ROOT = path.resolve(__dirname, '..');
export const FIX = path.join(ROOT, 'fixtures/build');
export const BIN = path.join(ROOT, 'packages/cli/bin/hotload.js');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  json?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  /**
   * attach, status or revert on one pid with --json: the one entry of the
   * per-process array, as its result, or {error} when it failed (undefined
   * when the document is not such an array).
   */
  one?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** Run the hotload CLI (asynchronously, so targets' output keeps flowing). */
export function hotload(args: string[], env: NodeJS.ProcessEnv = {}, opts: { cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 << 20, cwd: opts.cwd }, (err, stdout, stderr) => {
      const code: unknown = err ? (err as { code?: unknown }).code ?? 1 : 0; // the exit status, or a string for a spawn error
      let json;
      if (args.includes('--json')) {
        try {
          json = JSON.parse(stdout);
        } catch {
          json = undefined;
        }
      }
      const entry = Array.isArray(json) && json.length === 1 && typeof json[0]?.pid === 'number' && typeof json[0]?.ok === 'boolean' ? json[0] : undefined;
      const one = entry ? (entry.ok ? entry.result : { error: entry.error }) : undefined;
      resolve({ code: typeof code === 'number' ? code : 1, stdout, stderr, json, one });
    });
  });
}

/** A new directory under the system's temporary one, removed when the whole test run ends (tests/global-teardown.js). */
export function tmpdir(prefix = 'hotload-test-'): string {
  return removeAtEnd(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
}

/** A directory under the system's temporary one that a test's program made (watch's snapshot), removed when the whole test run ends. */
export function removeAtEnd(dir: string): string {
  if (process.env.HOTLOAD_TEST_DIRS) fs.appendFileSync(process.env.HOTLOAD_TEST_DIRS, `${dir}\n`);
  return dir;
}

/** Write a patch source and build it with `hotload mkpatch` against `target`. */
export async function mkpatch(source: string, target: string, name = 'patch'): Promise<string> {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, `${name}.c`), source);
  const out = path.join(dir, `${name}.so`);
  const r = await hotload(['mkpatch', path.join(dir, `${name}.c`), '--target', target, '-o', out]);
  if (r.code !== 0) throw new Error(`mkpatch failed: ${r.stderr}`);
  return out;
}

/** Build a patch without mkpatch's checks (to test what attach refuses on its own). */
export function rawPatch(source: string, target: string, buildId: string, name = 'raw'): string {
  const dir = tmpdir();
  const src = path.join(dir, `${name}.c`);
  fs.writeFileSync(src, source);
  const meta = path.join(dir, 'meta.c');
  const json = JSON.stringify({ version: 1, buildId, module: path.basename(target), path: target }).replace(/"/g, '\\"');
  fs.writeFileSync(meta, `__attribute__((used, section(".hotload.target"))) static const char t[] = "${json}";\n`);
  const out = path.join(dir, `${name}.so`);
  const r = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-I', path.join(ROOT, 'include'), src, meta, '-o', out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return out;
}

export function buildIdOf(file: string): string {
  const r = spawnSync('readelf', ['-n', file], { encoding: 'utf8' });
  return /Build ID: ([0-9a-f]+)/.exec(r.stdout)![1];
}

export class Target {
  readonly lines: string[] = [];
  private buf = '';
  private constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      const parts = this.buf.split('\n');
      this.buf = parts.pop()!;
      this.lines.push(...parts);
    });
  }

  static start(bin: string, args: string[] = [], opts: { env?: NodeJS.ProcessEnv } = {}): Target {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...opts.env } });
    running.add(child);
    return new Target(child);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Wait for a line matching `re` printed after line index `from`. */
  async waitFor(re: RegExp, timeoutMs = 10000, from = 0): Promise<string> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.slice(from).find((l) => re.test(l));
      if (hit) return hit;
      if (Date.now() > until) throw new Error(`timed out waiting for ${re}; last lines:\n${this.lines.slice(-5).join('\n')}`);
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`target exited (${this.child.exitCode ?? this.child.signalCode}) waiting for ${re}`);
      await sleep(10);
    }
  }

  /** The next line matching `re` printed from now on. */
  async next(re: RegExp, timeoutMs = 10000): Promise<string> {
    return this.waitFor(re, timeoutMs, this.lines.length);
  }

  /**
   * `n` consecutive lines matching `re` printed from now on, skipping the first
   * one (it may have been printed before now and only read since).
   */
  async fresh(re: RegExp, n = 1, timeoutMs = 10000): Promise<string[]> {
    const from = this.lines.length;
    const until = Date.now() + timeoutMs;
    for (;;) {
      const hits = this.lines.slice(from).filter((l) => re.test(l));
      if (hits.length > n) return hits.slice(1, n + 1);
      if (Date.now() > until) throw new Error(`timed out waiting for ${n + 1} lines matching ${re}; last lines:\n${this.lines.slice(-5).join('\n')}`);
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`target exited (${this.child.exitCode ?? this.child.signalCode}) waiting for ${re}`);
      await sleep(10);
    }
  }

  alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null && fs.existsSync(`/proc/${this.pid}`);
  }

  /** Process state letter (R, S, T, ...) and tracer pid from /proc. */
  state(): { state: string; tracer: number; threads: string[] } {
    const s = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const threads = fs.readdirSync(`/proc/${this.pid}/task`).map((t) => {
      const st = fs.readFileSync(`/proc/${this.pid}/task/${t}/status`, 'utf8');
      return /State:\s+(\S)/.exec(st)![1];
    });
    return { state: /State:\s+(\S)/.exec(s)![1], tracer: Number(/TracerPid:\s+(\d+)/.exec(s)![1]), threads };
  }

  /** Healthy: alive, no thread stopped, not traced. */
  expectHealthy(): void {
    expect(this.alive()).toBe(true);
    const st = this.state();
    expect(st.tracer).toBe(0);
    expect(st.threads.filter((x) => x === 't' || x === 'T')).toEqual([]);
    expect(this.lines.filter((l) => l.startsWith('BAD'))).toEqual([]);
  }

  readMem(addr: bigint, len: number): Buffer {
    const fd = fs.openSync(`/proc/${this.pid}/mem`, 'r');
    try {
      const b = Buffer.alloc(len);
      fs.readSync(fd, b, 0, len, Number(addr));
      return b;
    } finally {
      fs.closeSync(fd);
    }
  }

  /** The pids of the processes this target forked (and theirs), living now. */
  descendants(): number[] {
    return this.alive() ? descendants(this.pid) : [];
  }

  /**
   * Kill the target and every process it forked (a lock holder, a traced
   * child), found from /proc before the kill: only what this test started.
   */
  async stop(): Promise<void> {
    if (!this.alive()) {
      running.delete(this.child);
      return;
    }
    await killTree(this.pid, () => this.child.kill('SIGKILL'), new Promise((r) => this.child.once('exit', r)));
    running.delete(this.child);
  }
}

/**
 * The living descendants of `pid` (its children, theirs, ...), read from
 * /proc/PID/task/TID/children: the processes it forked, and nothing else on
 * the machine.
 */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop()!;
    let tasks: string[];
    try {
      tasks = fs.readdirSync(`/proc/${p}/task`);
    } catch {
      continue; // gone
    }
    for (const t of tasks) {
      let kids = '';
      try {
        kids = fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const k of kids.split(' ').filter(Boolean).map(Number)) {
        if (!out.includes(k)) {
          out.push(k);
          todo.push(k);
        }
      }
    }
  }
  return out;
}

/** Gone, or a zombie waiting for its parent (a zombie keeps its pid: it is still ours to wait for). */
export function exited(pid: number): boolean {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^[ZX]$/.test(st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3));
  } catch {
    return true;
  }
}

/**
 * SIGKILL the descendants of `pid` (read while it still lives, so each is
 * still its child or grandchild: its pid cannot have been reused), then `pid`
 * itself with `kill` (a ChildProcess's own kill, so a pid of ours is never
 * reused under us), and wait until all of them have exited.
 */
async function killTree(pid: number, kill: () => void, exit: Promise<unknown>): Promise<void> {
  const kids = descendants(pid);
  for (const k of kids) {
    try {
      process.kill(k, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  kill();
  await exit;
  for (let i = 0; i < 500 && kids.some((k) => !exited(k)); i++) await sleep(10);
  const left = kids.filter((k) => !exited(k));
  if (left.length) throw new Error(`processes forked by ${pid} still alive after SIGKILL: ${left.join(' ')}`);
}

/**
 * Wait until `probe` returns something other than undefined, checking every
 * `everyMs` (a timer: the CPU stays free for the processes under test).
 */
export async function until<T>(probe: () => T | undefined, what: string, timeoutMs = 10000, everyMs = 2): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) {
    if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
      for (const k of descendants(c.pid)) {
        try {
          process.kill(k, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    c.kill('SIGKILL');
  }
});

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runtime address of a symbol of the main executable of `pid`. */
export function symbolAddress(pid: number, file: string, name: string): bigint {
  const nm = spawnSync('nm', [file], { encoding: 'utf8' }).stdout;
  const m = new RegExp(`^([0-9a-f]+) [tT] ${name.replace(/\./g, '\\.')}$`, 'm').exec(nm);
  if (!m) throw new Error(`${name} not in ${file}`);
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n');
  const real = fs.realpathSync(file);
  const first = maps.find((l) => l.endsWith(real) && / 00000000 /.test(l))!;
  const base = BigInt('0x' + first.split('-')[0]);
  const isPie = spawnSync('readelf', ['-h', file], { encoding: 'utf8' }).stdout.includes('DYN');
  return (isPie ? base : 0n) + BigInt('0x' + m[1]);
}

/** ptrace must work here; under CI=true a test never skips for lack of it. */
export function ptraceAvailable(): boolean {
  return process.platform === 'linux' && process.arch === 'x64';
}

/** compute(x) becomes x + 1000 + k; the target's own `counter` carries on. */
export function computePatch(k: number, fn = 'compute'): string {
  return `#include <hotload.h>
HOTLOAD_STATIC(int, counter);
int ${fn}_v2(int x) { HOTLOAD_REF(counter) += 1; return x + 1000 + ${k}; }
HOTLOAD_REPLACE(${fn}, ${fn}_v2);
`;
}

let saves = 0;
/**
 * Replace `from` by `to` in a file, as an editor saving it would: in place,
 * or (every other save) a new file renamed over the old one, as vim does.
 */
export function edit(file: string, from: string | RegExp, to: string): void {
  const text = fs.readFileSync(file, 'utf8');
  const next = text.replace(from, to);
  if (next === text) throw new Error(`${file}: ${from} not found`);
  if (saves++ % 2 === 0) fs.writeFileSync(file, next);
  else {
    fs.writeFileSync(`${file}.swp`, next);
    fs.renameSync(`${file}.swp`, file);
  }
}

const TREE_MAIN = `#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>
int app_value(void);
int main(int argc, char **argv) {
  (void)argc;
  void *h = dlopen(argv[1], RTLD_NOW);
  int (*mod_value)(void) = (int (*)(void))dlsym(h, "mod_value");
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (;;) { printf("app %d mod %d\\n", app_value(), mod_value()); usleep(20000); }
}
`;

/**
 * A program and the module it dlopens, as sources in one tree: app/main.c and
 * app/util.c (app_value returns appK), mod/mod.c (mod_value returns modK).
 * The program prints `app <app_value> mod <mod_value>` every 20 ms. Returns
 * the files written, relative to `dir`.
 */
export function writeModuleTree(dir: string, appK: number, modK: number): string[] {
  const files: Record<string, string> = {
    'app/main.c': TREE_MAIN,
    'app/util.c': `__attribute__((noinline)) int app_value(void) { return ${appK}; }\n`,
    'mod/mod.c': `__attribute__((noinline)) int mod_value(void) { return ${modK}; }\n`,
  };
  for (const [f, src] of Object.entries(files)) {
    fs.mkdirSync(path.join(dir, path.dirname(f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), src);
  }
  return Object.keys(files);
}

/**
 * The waits of `fixtures/build/target wait KIND` (5 s each, with a timeout):
 * the kind, what the call returns when it times out, and whether its deadline
 * is kept exactly across a borrow (epoll_wait's starts over: the kernel fails
 * it with EINTR and hotload issues it again).
 */
export const WAIT_KINDS: [kind: string, returns: string, exact: boolean][] = [
  ['nanosleep', '0 errno 0', true],
  ['clock_nanosleep', '0 errno 0', true],
  ['clock_nanosleep_abs', '0 errno 0', true],
  ['futex', '-1 errno ETIMEDOUT', true],
  ['futex_abs', '-1 errno ETIMEDOUT', true],
  ['poll', '0 errno 0', true],
  ['ppoll', '0 errno 0', true],
  ['epoll', '0 errno 0', false],
];

/** A start() for one test file: every target it starts is stopped (with what it forked) after each test. */
export function stoppedAfterEach(): (bin: string, args?: string[]) => Target {
  const started: Target[] = [];
  afterEach(async () => {
    for (const t of started.splice(0)) await t.stop();
  });
  return (bin, args = []) => {
    const t = Target.start(bin, args);
    started.push(t);
    return t;
  };
}
