#!/usr/bin/env node
// `make demo`: start the demo program, patch it live, show the change, put the
// old code back. Uses the real CLI on a real process; nothing is simulated.
'use strict';
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const hotload = (...args) => execFileSync(process.execPath, [path.join(root, 'packages/cli/bin/hotload.js'), ...args], { encoding: 'utf8' });
const color = process.stdout.isTTY && !('NO_COLOR' in process.env);
const say = (s) => console.log(color ? `\x1b[1;36m==> ${s}\x1b[0m` : `==> ${s}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const demo = path.join(root, 'fixtures/build/demo');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-demo-'));
  const patch = path.join(work, 'demo-patch.so');

  say('starting fixtures/build/demo: it prints greeting() and next_value(1) every 300 ms');
  const child = spawn(demo, ['300'], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout.on('data', (d) => {
    for (const line of String(d).split('\n').filter(Boolean)) console.log(`   [demo ${child.pid}] ${line}`);
  });
  try {
    await sleep(1000);
    say('building the patch: hotload mkpatch fixtures/src/demo-patch.c --target fixtures/build/demo');
    process.stdout.write(hotload('mkpatch', path.join(root, 'fixtures/src/demo-patch.c'), '--target', demo, '-o', patch));
    say(`applying it to the running process: hotload attach ${child.pid} demo-patch.so`);
    process.stdout.write(hotload('attach', String(child.pid), patch));
    await sleep(1000);
    say(`what it runs now: hotload status ${child.pid}`);
    process.stdout.write(hotload('status', String(child.pid)));
    say(`putting the old code back: hotload revert ${child.pid} demo-patch.so (the count carries on)`);
    process.stdout.write(hotload('revert', String(child.pid), patch));
    await sleep(1000);
    say('done: the same process ran old, new and old code again without a restart');
  } finally {
    child.kill('SIGTERM');
    fs.rmSync(work, { recursive: true, force: true });
  }
  await editSaveLive();
}

/** Edit the source of a running program, save, and it runs the new code: `hotload watch`. */
async function editSaveLive() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-demo-watch-'));
  const src = path.join(work, 'demo.c');
  fs.copyFileSync(path.join(root, 'fixtures/src/demo.c'), src);
  fs.writeFileSync(
    path.join(work, 'Makefile'),
    `CFLAGS = -O2 -g ${hotload('flags', '--diff', '--cflags').trim()}\ndemo: demo.o\n\t$(CC) demo.o -o demo\n`,
  );
  say('act 2, edit-save-live: a copy of demo.c, built with `hotload flags --diff` by a two-line Makefile');
  execFileSync('make', ['-s'], { cwd: work });
  const child = spawn(path.join(work, 'demo'), ['300'], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout.on('data', (d) => {
    for (const line of String(d).split('\n').filter(Boolean)) console.log(`   [demo ${child.pid}] ${line}`);
  });
  say(`hotload watch --pid ${child.pid} demo.c   (rebuilds with make on every save)`);
  const watch = spawn(process.execPath, [path.join(root, 'packages/cli/bin/hotload.js'), 'watch', '--pid', String(child.pid), 'demo.c'], { cwd: work, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  watch.stdout.on('data', (d) => {
    out += d;
    for (const line of String(d).split('\n').filter(Boolean)) console.log(`   [watch] ${line}`);
  });
  const until = async (re) => {
    for (let i = 0; i < 600 && !re.test(out); i++) await sleep(50);
    if (!re.test(out)) throw new Error(`watch did not print ${re}`);
  };
  try {
    await until(/watching/);
    await sleep(800);
    say('editing demo.c: greeting() says something else, next_value() counts in tens; saving');
    const text = fs.readFileSync(src, 'utf8').replace('hello from the original code', 'hello from the edited source').replace('counter += step;', 'counter += step * 10;');
    fs.writeFileSync(src, text);
    await until(/patched/);
    await sleep(1200);
    say('Ctrl-C: watch stops, the process keeps the new code');
    watch.kill('SIGINT');
    await new Promise((r) => watch.once('exit', r));
    await sleep(600);
    say('done: saved source, new code running, the value kept counting from where it was');
  } finally {
    watch.kill('SIGKILL');
    child.kill('SIGTERM');
    fs.rmSync(work, { recursive: true, force: true });
    // watch keeps its copies while the process runs its patches; the process is gone now.
    for (const f of fs.readdirSync(os.tmpdir()).filter((x) => x.startsWith(`hotload-watch-${child.pid}-`))) fs.rmSync(path.join(os.tmpdir(), f), { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e.stderr ? String(e.stderr) : e);
  process.exitCode = 1;
});
