// The package a user installs, installed as a user would: packed
// (scripts/pack.js, `make pack`), installed with `npm install -g --prefix` from
// a directory outside the checkout, then used from there: --version, mkpatch
// (with the header it ships), attach and revert (with the shim it ships, or
// builds with the system compiler where that one does not load).
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FIX, ROOT, Target, symbolAddress, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');
let dir: string;
let tgz: string;
let hotloadBin: string;
let installed: string;

beforeAll(() => {
  dir = tmpdir('hotload-package-');
  // The README's lines for a user installing from a checkout.
  tgz = execFileSync(process.execPath, [path.join(ROOT, 'scripts/pack.js'), path.join(dir, 'npm')], { encoding: 'utf8' }).trim();
  const r = spawnSync('npm', ['install', '-g', '--prefix', path.join(dir, 'prefix'), '--no-fund', '--no-audit', tgz], { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm install failed: ${r.stderr}`);
  hotloadBin = path.join(dir, 'prefix/bin/hotload');
  installed = path.join(dir, 'prefix/lib/node_modules/@hotload/hotload');
}, 300000);

/** The installed CLI, run from outside the checkout, with nothing of the checkout in its environment. */
function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  const clean: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const k of ['HOTLOAD_SHIM', 'HOTLOAD_CACHE']) if (!(k in env)) delete clean[k];
  return spawnSync(hotloadBin, args, { cwd: dir, encoding: 'utf8', env: clean });
}

test('one package: bin, files, engines, os, cpu; the header and the shim in it; no tests or TypeScript sources', () => {
  const pj = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'));
  expect(pj).toMatchObject({ name: '@hotload/hotload', bin: { hotload: 'bin/hotload.js' }, engines: { node: '>=20' }, os: ['linux'], cpu: ['x64'] });
  expect(Object.keys(pj.dependencies).sort()).toEqual(['elfy', 'ffi-rs', 'yargs']);
  const files = execFileSync('tar', ['tzf', tgz], { encoding: 'utf8' }).split('\n');
  expect(files).toContain('package/include/hotload.h');
  expect(files).toContain('package/native-shim/build/libhotload-shim.so');
  expect(files).toContain('package/native-shim/shim.c');
  expect(files).toContain('package/native-shim/build/libhotload-debug.so');
  expect(files).toContain('package/native-shim/debug-descriptor.c');
  expect(files.filter((f) => /\.test\.|\.ts$|\.map$|^package\/tests\//.test(f) && !f.endsWith('.d.ts'))).toEqual([]);
  // Nothing resolves into the checkout: every @hotload require was made relative.
  for (const f of files.filter((x) => x.endsWith('.js'))) expect(fs.readFileSync(path.join(installed, f.slice('package/'.length)), 'utf8')).not.toMatch(/require\("@hotload\//);
});

test('--version, mkpatch with the shipped header, attach and revert, all from the installed package', async () => {
  const v = run(['--version']);
  expect(v.status).toBe(0);
  expect(v.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'packages/cli/package.json'), 'utf8')).version);
  fs.writeFileSync(path.join(dir, 'fix.c'), '#include <hotload.h>\nHOTLOAD_STATIC(int, counter);\nint compute_v2(int x) { HOTLOAD_REF(counter)++; return x + 1000 + 41; }\nHOTLOAD_REPLACE(compute, compute_v2);\n');
  const m = run(['mkpatch', 'fix.c', '--target', TARGET, '-o', 'fix.so']);
  expect(m.stderr).toBe('');
  expect(m.status).toBe(0);
  const t = Target.start(TARGET, ['loop']);
  try {
    await t.waitFor(/^compute 6 /);
    const a = run(['attach', String(t.pid), 'fix.so', '--json']);
    expect(a.status).toBe(0);
    expect(JSON.parse(a.stdout)[0].result.functions[0].name).toBe('compute');
    await t.next(/^compute 1046 /);
    const r = run(['revert', String(t.pid), '--all']);
    expect(r.status).toBe(0);
    await t.next(/^compute 6 /);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

test('the API from the installed package: required (CommonJS) and imported (an ES module, by name through its exports map) alike, status of a real process', async () => {
  const t = Target.start(TARGET, ['loop']);
  try {
    await t.waitFor(/^compute 6 /);
    // Scripts beside the installed node_modules, resolving the package by name as a user's would.
    const lib = path.join(dir, 'prefix/lib');
    fs.writeFileSync(path.join(lib, 'use.mjs'), `import { status, isHotloadError, ERRORS } from '@hotload/hotload';\nimport api from '@hotload/hotload';\nconst s = status(${t.pid});\nconsole.log(JSON.stringify({ functions: s.functions.length, same: api.status === status, err: isHotloadError(new Error('x')), codes: 'USAGE' in ERRORS }));\n`);
    fs.writeFileSync(path.join(lib, 'use.cjs'), `const { status } = require('@hotload/hotload');\nconsole.log(JSON.stringify({ functions: status(${t.pid}).functions.length }));\n`);
    const esm = spawnSync(process.execPath, [path.join(lib, 'use.mjs')], { cwd: lib, encoding: 'utf8' });
    expect(esm.stderr).toBe('');
    expect(JSON.parse(esm.stdout)).toEqual({ functions: 0, same: true, err: false, codes: true });
    const cjs = spawnSync(process.execPath, [path.join(lib, 'use.cjs')], { cwd: lib, encoding: 'utf8' });
    expect(cjs.stderr).toBe('');
    expect(JSON.parse(cjs.stdout)).toEqual({ functions: 0 });
  } finally {
    await t.stop();
  }
});

test('a patch from a rebuild, made and applied from the installed package, is registered with debuggers by the library it ships', async () => {
  const D = path.join(FIX, 'diff');
  const m = run(['mkpatch', '--from', path.join(D, 'base/diff.o'), '--to', path.join(D, 'CONST/diff.o'), '--target', path.join(D, 'base/diff'), '-o', 'const.so']);
  expect(m.status).toBe(0);
  const t = Target.start(path.join(D, 'base/diff'), ['loop']);
  try {
    await t.waitFor(/^constant=11 /);
    const a = run(['attach', String(t.pid), 'const.so', '--json']);
    expect(a.status).toBe(0);
    expect(JSON.parse(a.stdout)[0].result.notes).toEqual([]);
    await t.next(/^constant=12 /);
    expect(JSON.parse(run(['status', String(t.pid), '--json']).stdout)[0].result.patches[0].debuggers).toBe(true);
    expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8')).toMatch(/\/hotload-\d+\/[0-9a-f]{16}-libhotload-debug\.so$/m);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

test('watch\'s helper process (it starts the compiler and the link) runs from the installed package', () => {
  // A helper that cannot start leaves watch working, only slower: asked here, from outside the checkout.
  const script = `const { Spawner } = require(${JSON.stringify(path.join(installed, 'packages/api/dist/spawner.js'))});
const s = new Spawner();
s.run('sh', ['-c', 'echo $PPID'], { cwd: '/' }).then((r) => { console.log(JSON.stringify({ helper: s.pid, ppid: Number(r.stdout) })); s.close(); });`;
  const r = spawnSync(process.execPath, ['-e', script], { cwd: os.tmpdir(), encoding: 'utf8' });
  expect(r.stderr).toBe('');
  const { helper, ppid } = JSON.parse(r.stdout);
  expect(helper).toBeGreaterThan(0);
  expect(ppid).toBe(helper);
});

test('run by another user (nobody) on root\'s process: PTRACE_DENIED says whose it is and what to do; nothing is changed', async () => {
  // The installed package, not the checkout: a checkout may lie in a directory only its owner can read.
  fs.chmodSync(dir, 0o755);
  const p = path.join(dir, 'nobody.so');
  fs.copyFileSync(path.join(dir, 'fix.so'), p);
  fs.chmodSync(p, 0o644);
  const t = Target.start(TARGET, ['loop']);
  try {
    await t.waitFor(/^compute 6 /);
    const before = t.readMem(symbolAddress(t.pid, TARGET, 'compute') - 14n, 16);
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, hotloadBin, 'attach', String(t.pid), p], { cwd: dir, encoding: 'utf8', env: { ...process.env, HOME: dir } });
    expect(r.stderr).toMatch(new RegExp(`^error PTRACE_DENIED: not allowed to trace process ${t.pid}: it belongs to uid 0$`, 'm'));
    expect(r.stderr).toMatch(/^hint: Run hotload as the user that owns the process, or as root\.$/m);
    expect(r.status).toBe(5);
    expect(t.readMem(symbolAddress(t.pid, TARGET, 'compute') - 14n, 16)).toEqual(before);
    await t.next(/^compute 6 /);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

test('where the shipped shim does not load, it is built with the system compiler (once); with no compiler, SHIM_MISSING says what to do', async () => {
  const shipped = path.join(installed, 'native-shim/build/libhotload-shim.so');
  fs.renameSync(shipped, `${shipped}.away`);
  try {
    const cache = path.join(dir, 'cache');
    const t = Target.start(TARGET, ['loop']);
    try {
      await t.waitFor(/^compute 6 /);
      const s = run(['attach', String(t.pid), 'fix.so'], { XDG_CACHE_HOME: cache });
      expect(s.stderr).toBe('');
      expect(s.status).toBe(0);
      expect(fs.readdirSync(path.join(cache, 'hotload')).filter((f) => /^libhotload-shim-[0-9a-f]{16}\.so$/.test(f))).toHaveLength(1);
      expect(run(['revert', String(t.pid), '--all'], { XDG_CACHE_HOME: cache }).status).toBe(0);
      const none = run(['attach', String(t.pid), 'fix.so'], { XDG_CACHE_HOME: path.join(dir, 'empty-cache'), CC: '/bin/false' });
      expect(none.status).toBe(1);
      expect(none.stderr).toMatch(/error SHIM_MISSING/);
      expect(none.stderr).toMatch(/hint: .*install gcc/);
      await t.next(/^compute 6 /); // untouched
      t.expectHealthy();
    } finally {
      await t.stop();
    }
  } finally {
    fs.renameSync(`${shipped}.away`, shipped);
  }
});
