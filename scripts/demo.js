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
}

main().catch((e) => {
  console.error(e.stderr ? String(e.stderr) : e);
  process.exitCode = 1;
});
