// Every command line the README shows in its fenced blocks (lines starting
// with `$ hotload`, `hotload `, `npx hotload`, `make `, `npm install -g`) is
// either run here, as written (a pid it names is the pid of the process this
// test started), or run by a test named below, whose file must still hold
// that test. A README line added later without a test fails the first test.
// The rollout plan example is run here too, as written: in a pid and network
// namespace of its own, where `server` names only the processes started there
// and 127.0.0.1:8080 answers its health check.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, FIX, ROOT, Target, hotload, tmpdir } from './helpers';
import { Watch } from './watch-client';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const MAKEFILE = fs.readFileSync(path.join(ROOT, 'Makefile'), 'utf8');

/** The fenced blocks, each with its language. */
const BLOCKS = [...README.matchAll(/```([a-z]*)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], text: m[2] }));
/** Each command line of them, trimmed, its trailing comment removed. */
const LINES = BLOCKS.flatMap((b) => b.text.split('\n'))
  .map((l) => l.trim())
  .filter((l) => /^(\$ hotload|hotload |npx hotload|make |npm install -g )/.test(l))
  .map((l) => l.replace(/\s+# .*$/, ''));

type Where = { here: string } | { file: string; test: string };
/** Where each line is run. */
const RUN: Record<string, Where> = {
  '$ hotload mkpatch fix.c --target ./server -o fix.so': { here: 'the first block' },
  '$ hotload attach 4242 fix.so': { here: 'the first block' },
  '$ hotload revert 4242 fix.so': { here: 'the first block' },
  'npm install -g @hotload/hotload': { here: 'once published: the package it names is the one `make pack` writes' },
  'make pack': { file: 'tests/package.test.ts', test: '--version, mkpatch with the shipped header, attach and revert, all from the installed package' },
  'npm install -g build/npm/hotload-hotload-0.1.0.tgz': { file: 'tests/package.test.ts', test: '--version, mkpatch with the shipped header, attach and revert, all from the installed package' },
  'hotload --version': { here: '--version' },
  'make demo': { here: 'make demo' },
  'make test': { here: 'make test' },
  'npx hotload post $@': { file: 'tests/readme-build.test.ts', test: 'builds a program whose functions are all patchable, posted' },
  '$ hotload watch --pid $(pidof server) src/': { here: 'the watch block' },
  'hotload post $@': { here: 'the plain Makefile block' },
};

test('every command line of the README is run here or by a named test (a new line needs one)', () => {
  expect(LINES.length).toBeGreaterThanOrEqual(12);
  expect([...new Set(LINES)].sort()).toEqual(Object.keys(RUN).sort());
  for (const [line, where] of Object.entries(RUN)) {
    if ('file' in where) {
      const file = path.join(ROOT, where.file);
      expect({ line, has: fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes(`'${where.test.replace(/'/g, "\\'")}'`) }).toEqual({ line, has: true });
    }
  }
});

test('`make pack`, `make demo` and `make test` run what the tests run: pack.js into build/npm, scripts/demo.js, jest in band', () => {
  expect(MAKEFILE).toMatch(/^pack: build\n\tnode scripts\/pack\.js build\/npm$/m);
  expect(fs.readFileSync(path.join(ROOT, 'tests/package.test.ts'), 'utf8')).toMatch(/scripts\/pack\.js/);
  expect(MAKEFILE).toMatch(/^demo: build\n\tnode scripts\/demo\.js$/m);
  expect(MAKEFILE).toMatch(/^test: .*\n\tnpx jest --runInBand$/m);
  // The version in the npm install line is the package's.
  const version = JSON.parse(fs.readFileSync(path.join(ROOT, 'packages/cli/package.json'), 'utf8')).version;
  expect(LINES).toContain(`npm install -g build/npm/hotload-hotload-${version}.tgz`);
});

test('hotload --version', async () => {
  const r = await hotload(['--version']);
  expect(r.code).toBe(0);
  expect(r.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'packages/cli/package.json'), 'utf8')).version);
});

const SERVER_C = `#include <stdio.h>
#include <unistd.h>
__attribute__((noipa)) int handle_request(int x) { return x + 1; }
int main(void) { setvbuf(stdout, 0, _IOLBF, 0); for (;;) { printf("reply %d\\n", handle_request(41)); usleep(20000); } }
`;
const FIX_C = `#include <hotload.h>
int handle_request_v2(int x) { return x + 100; }
HOTLOAD_REPLACE(handle_request, handle_request_v2);
`;

test('the first block: mkpatch, attach, revert, as written (4242 is the pid of the server started here)', async () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'server.c'), SERVER_C);
  fs.writeFileSync(path.join(dir, 'fix.c'), FIX_C);
  execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', 'server.c', '-o', 'server'], { cwd: dir });
  const block = BLOCKS.find((b) => b.text.startsWith('$ hotload mkpatch fix.c'))!.text.split('\n');
  const cmd = (prefix: string) => block.find((l) => l.startsWith(prefix))!.replace(/^\$ hotload /, '').split(' ');
  const t = Target.start(path.join(dir, 'server'));
  try {
    await t.waitFor(/^reply 42$/);
    const withPid = (args: string[]) => args.map((a) => (a === '4242' ? String(t.pid) : a));
    const mk = await hotload(cmd('$ hotload mkpatch'), {}, { cwd: dir });
    expect(mk.code).toBe(0);
    expect(mk.stdout.trim()).toMatch(/^wrote fix\.so: handle_request -> handle_request_v2 for server \(build-id [0-9a-f]{16}\.\.\.\)$/);
    const at = await hotload(withPid(cmd('$ hotload attach')), {}, { cwd: dir });
    expect(at.code).toBe(0);
    // The README shows the patch as typed; hotload prints its full path.
    expect(at.stdout).toMatch(new RegExp(`^patched process ${t.pid} with ${dir}/fix\\.so \\(1 function\\)\\n  handle_request 0x[0-9a-f]+ -> 0x[0-9a-f]+\\n  stops: longest of one thread [\\d.]+ ms`, 'm'));
    await t.next(/^reply 141$/);
    const rv = await hotload(withPid(cmd('$ hotload revert')), {}, { cwd: dir });
    expect(rv.code).toBe(0);
    await t.next(/^reply 42$/);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

test('the plain Makefile block (`hotload post $@` with hotload on PATH): the program is built and posted', () => {
  const dir = tmpdir();
  const block = BLOCKS.filter((b) => b.lang === 'make').find((b) => /^\thotload post \$@$/m.test(b.text))!.text;
  fs.writeFileSync(path.join(dir, 'server.c'), SERVER_C);
  fs.writeFileSync(path.join(dir, 'Makefile'), `OBJS = server.o\n${block}`);
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'hotload'), `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
  fs.chmodSync(path.join(bin, 'hotload'), 0o755);
  const r = spawnSync('make', ['server'], { cwd: dir, encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
  expect(r.stderr).toBe('');
  expect(r.stdout).toMatch(/^server: posted, \d+ entries rewritten to 66 90/m);
  expect(execFileSync('readelf', ['-SW', path.join(dir, 'server')], { encoding: 'utf8' })).toMatch(/\.hotload\.index/);
});

test('the watch block: `hotload watch --pid $(pidof server) src/` in the build directory; a save in src/ is patched in', async () => {
  const dir = tmpdir();
  fs.mkdirSync(path.join(dir, 'src'));
  fs.writeFileSync(path.join(dir, 'src/server.c'), SERVER_C);
  fs.writeFileSync(path.join(dir, 'Makefile'), 'CFLAGS = -O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections\nserver: server.o\n\t$(CC) server.o -o server\nserver.o: src/server.c\n\t$(CC) $(CFLAGS) -c src/server.c -o server.o\n');
  execFileSync('make', ['-s'], { cwd: dir });
  const line = BLOCKS.map((b) => b.text.split('\n').find((l) => l.startsWith('$ hotload watch'))).find(Boolean)!;
  expect(line).toBe('$ hotload watch --pid $(pidof server) src/');
  const t = Target.start(path.join(dir, 'server'));
  const w = new Watch(dir, line.replace(/^\$ hotload watch /, '').replace('$(pidof server)', String(t.pid)).split(' '));
  try {
    await t.waitFor(/^reply 42$/);
    const ready = await w.event('ready', 0);
    expect(ready.watching).toEqual([path.join(dir, 'src')]);
    const n = w.events.length;
    fs.writeFileSync(path.join(dir, 'src/server.c'), SERVER_C.replace('x + 1;', 'x + 2;'));
    expect((await w.event('patched', n)).changed).toEqual(['handle_request']);
    await t.next(/^reply 43$/);
    expect(await w.stop()).toBe(0);
  } finally {
    await w.stop();
    await t.stop();
  }
});

test('the rollout plan example, as written: two processes named server, the canary first, the health check on 127.0.0.1:8080', () => {
  const dir = tmpdir();
  const plan = BLOCKS.find((b) => b.lang === 'json' && b.text.includes('"healthCheck"'))!.text;
  fs.writeFileSync(path.join(dir, 'plan.json'), plan);
  fs.copyFileSync(path.join(FIX, 'target'), path.join(dir, 'server'));
  fs.writeFileSync(path.join(dir, 'fix.c'), '#include <hotload.h>\nint compute_v2(int x) { return x + 1090; }\nHOTLOAD_REPLACE(compute, compute_v2);\n');
  execFileSync(process.execPath, [BIN, 'mkpatch', 'fix.c', '--target', './server', '-o', 'fix.so'], { cwd: dir });
  fs.mkdirSync(path.join(dir, 'www'));
  fs.writeFileSync(path.join(dir, 'www/health'), 'ok\n');
  // Everything below lives in the namespaces and ends with their first process.
  const script = `set -e
ip link set lo up
(cd www && exec python3 -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1) &
./server loop > a.out &
./server loop > b.out &
until curl -sf http://127.0.0.1:8080/health >/dev/null; do sleep 0.05; done
until grep -q '^compute 6 ' a.out && grep -q '^compute 6 ' b.out; do sleep 0.05; done
set +e
"${process.execPath}" "${BIN}" rollout plan.json --json > result.json
echo "exit $?"
n=$(wc -l < a.out); until [ $(tail -n +$((n + 1)) a.out | grep -c '^compute 1095 ') -gt 0 ]; do sleep 0.05; done
n=$(wc -l < b.out); until [ $(tail -n +$((n + 1)) b.out | grep -c '^compute 1095 ') -gt 0 ]; do sleep 0.05; done
echo patched`;
  const r = spawnSync('unshare', ['--pid', '--fork', '--net', '--mount-proc', 'sh', '-c', script], { cwd: dir, encoding: 'utf8', timeout: 60000 });
  expect(r.stderr).toBe('');
  expect(r.stdout).toBe('exit 0\npatched\n');
  const res = JSON.parse(fs.readFileSync(path.join(dir, 'result.json'), 'utf8'));
  expect(res.outcome).toBe('success');
  expect(res.processes.map((p: { canary: boolean; status: string; applied: string[] }) => [p.canary, p.status, p.applied])).toEqual([
    [true, 'applied', [path.join(dir, 'fix.so')]],
    [false, 'applied', [path.join(dir, 'fix.so')]],
  ]);
});

test('make demo (its recipe, scripts/demo.js, run here): patches the demo live, reverts it, then edits its source under watch', () => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/demo.js')], { encoding: 'utf8', timeout: 120000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/patched process \d+ with \S*demo-patch\.so \(2 functions\)/);
  expect(r.stdout).toMatch(/==> done: the same process ran old, new and old code again without a restart/);
  expect(r.stdout).toMatch(/\[watch\] .*patched/);
  expect(r.stdout).toMatch(/==> done: saved source, new code running/);
}, 150000);
