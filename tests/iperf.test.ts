// The C++ real program: iperf 2 from Debian's sources (a network server: a
// listener thread, and per connection a thread running a `Server` object),
// built by g++ 12 through `hotload c++` (scripts/build-iperf.sh). A rebuild
// that edits a constructor and a method goes live while a client transfers;
// a rebuild that adds a member to the class is refused, naming it.
import { execFile, execFileSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { BIN, ROOT, Target, edit, hotload, sleep, tmpdir } from './helpers';

/** The cached build (its objects and src/iperf). */
function iperfBuild(): string {
  return execFileSync(path.join(ROOT, 'scripts/build-iperf.sh'), { encoding: 'utf8' }).trim().split('\n').pop()!;
}

/**
 * A copy of the build with `edit` applied to its sources, rebuilt by its own
 * make: only the objects whose sources changed are compiled again. CXX is
 * given again because the checkout that built the cache may be gone.
 */
function editedCopy(build: string, change: (dir: string) => void): string {
  const dir = path.join(tmpdir('hotload-iperf-'), 'build');
  execFileSync('cp', ['-a', build, dir]);
  change(dir);
  const env = { ...process.env };
  delete env.MAKEFLAGS;
  delete env.MAKELEVEL;
  execFileSync('make', ['-s', '-C', path.join(dir, 'src'), 'iperf', `CXX=node ${BIN} c++`], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  return dir;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** An iperf client sending to the server for `seconds`; its exit status and report. */
function client(bin: string, port: number, seconds: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(bin, ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds)], (e, stdout) =>
      resolve({ code: e ? Number(e.code ?? 1) : 0, out: stdout })));
}

const REPORT = /\d+\.\d+-\d+\.\d+ sec\s+[\d.]+ [KMG]?Bytes\s+[\d.]+ [KMG]?bits\/sec/;

test('iperf (C++, g++ through hotload c++): a constructor and a method edited in a rebuild go live while a client transfers; that transfer completes, later connections run the new code, revert restores the old', async () => {
  const build = iperfBuild();
  const bin = path.join(build, 'src/iperf');
  // glibc's atexit stub (C++ static objects) has no pad and fails nothing.
  expect((await hotload(['check', bin])).code).toBe(0);

  const edited = editedCopy(build, (dir) => {
    const src = path.join(dir, 'src/Server.cpp');
    edit(src, '    mSettings = inSettings;\n', '    mSettings = inSettings;\n    printf("hotload: new Server for socket %d\\n", inSettings->mSock);\n    fflush(stdout);\n');
    edit(src, '    double tokens=0.000004;\n', '    double tokens=0.000004;\n    printf("hotload: RunTCP\\n");\n    fflush(stdout);\n');
  });
  const out = path.join(tmpdir(), 'iperf-server.so');
  const mk = await hotload(['mkpatch', '--from', build, '--to', edited, '--target', bin, '-o', out, '--json']);
  expect(mk.code).toBe(0);
  // The complete- and base-object constructors (C1/C2, one address) are one function, replaced once.
  const ctors = mk.json.replaced.filter((n: string) => /^_ZN6ServerC[12]EP15thread_Settings$/.test(n));
  expect(ctors).toHaveLength(1);
  expect(mk.json.replaced).toContain('_ZN6Server6RunTCPEv');
  expect(mk.json.demangled[ctors[0]]).toBe('Server::Server(thread_Settings*)');

  const port = await freePort();
  const t = Target.start(bin, ['-s', '-p', String(port)]);
  try {
    await t.waitFor(/Server listening on TCP port/);
    const first = await client(bin, port, 0.3);
    expect(first.code).toBe(0);
    expect(first.out).toMatch(REPORT);

    // A client in the middle of a 3 s transfer while the patch goes in.
    const transfer = client(bin, port, 3);
    await t.next(/connected with 127\.0\.0\.1/);
    await sleep(300);
    const r = await hotload(['attach', String(t.pid), out, '--json']);
    expect(r.code).toBe(0);
    expect(r.one.functions.map((f: { name: string }) => f.name)).toEqual(expect.arrayContaining([ctors[0], '_ZN6Server6RunTCPEv']));
    // Its server thread is inside the old RunTCP, and is told so.
    expect(r.one.active.map((a: { function: string }) => a.function)).toContain('_ZN6Server6RunTCPEv');
    const during = await transfer;
    expect(during.code).toBe(0);
    expect(during.out).toMatch(REPORT);
    expect(t.lines.filter((l) => l.startsWith('hotload:'))).toEqual([]);

    // A new connection: a new Server, built and run by the new code.
    const after = await client(bin, port, 0.3);
    expect(after.code).toBe(0);
    expect(after.out).toMatch(REPORT);
    await t.waitFor(/^hotload: RunTCP$/);
    expect(t.lines.filter((l) => l.startsWith('hotload:'))).toEqual([expect.stringMatching(/^hotload: new Server for socket \d+$/), 'hotload: RunTCP']);

    const st = await hotload(['status', String(t.pid)]);
    expect(st.stdout).toMatch(/Server::Server\(thread_Settings\*\)/);
    expect((await hotload(['revert', String(t.pid), '--all'])).code).toBe(0);
    const reverted = await client(bin, port, 0.3);
    expect(reverted.code).toBe(0);
    await sleep(200);
    expect(t.lines.filter((l) => l.startsWith('hotload:'))).toHaveLength(2);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
}, 180000);

test('iperf: a rebuild that adds a member to class Server is refused by diff and mkpatch, naming the class and the moved members, and writes nothing', async () => {
  const build = iperfBuild();
  const edited = editedCopy(build, (dir) =>
    edit(path.join(dir, 'include/Server.hpp'), '    thread_Settings *mSettings;\n', '    int mRetries;\n    thread_Settings *mSettings;\n'));
  const d = await hotload(['diff', build, edited]);
  expect(d.code).toBe(4);
  expect(d.stderr).toMatch(/class Server: size (\d+) -> (\d+); field mRetries inserted at offset 0; mSettings 0 -> 8/);
  expect(d.stderr).toMatch(/used by \d+ of the running build's functions and data, e\.g\. Server::/);
  const out = path.join(tmpdir(), 'refused.so');
  const mk = await hotload(['mkpatch', '--from', build, '--to', edited, '--target', path.join(build, 'src/iperf'), '-o', out, '--json']);
  expect(mk.code).toBe(4);
  expect(mk.json.error.code).toBe('UNPATCHABLE');
  expect(JSON.stringify(mk.json.error.details)).toMatch(/class Server/);
  expect(fs.existsSync(out)).toBe(false);
}, 120000);
