#!/usr/bin/env node
// A real server under load: memcached (Debian's sources, 4 worker threads) has
// every function that differs between its -O2 and -O1 builds replaced while a
// client does set/get round trips. Prints:
//   - mkpatch --from/--to wall time and functions per second, next to the
//     baseline of relinking the program from the same objects (what the
//     user's build does anyway);
//   - the client's longest round trip while the patch goes in, next to its
//     longest round trip over the same number of requests without one;
//   - attach wall time and hotload's own count of the all-threads stop.
// Medians of RUNS runs (default 5).
'use strict';
const { execFileSync, spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const BIN = path.join(root, 'packages/cli/bin/hotload.js');
const RUNS = Number(process.env.RUNS || 5);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-bench-mc-'));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

function run(args) {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`hotload ${args.join(' ')}: exit ${code}\n${err}`))));
  });
}

/** Round trips (set then get of one key) until `stop()` says so; returns each one's time in ms. */
async function client(sock, stop) {
  const s = net.createConnection(sock);
  await new Promise((r) => s.once('connect', r));
  s.setEncoding('latin1');
  let buf = '';
  let wake;
  s.on('data', (d) => {
    buf += d;
    if (wake) wake();
  });
  const reply = (done) => new Promise((r) => {
    const check = () => (done(buf) ? r() : (wake = check));
    check();
  });
  const times = [];
  for (let i = 0; !stop(i); i++) {
    const t0 = process.hrtime.bigint();
    buf = '';
    s.write(`set bench 0 0 ${String(i).length}\r\n${i}\r\n`);
    await reply((b) => b.endsWith('\r\n'));
    buf = '';
    s.write('get bench\r\n');
    await reply((b) => b.endsWith('END\r\n'));
    times.push(ms(t0));
  }
  s.destroy();
  return times;
}

async function main() {
  const [o2, o1] = execFileSync(path.join(root, 'scripts/build-memcached.sh'), { encoding: 'utf8' }).trim().split('\n').slice(-2);
  const server = path.join(o2, 'memcached');
  const patch = path.join(work, 'O1.so');

  const mk = [];
  const link = [];
  let functions = 0;
  for (let i = 0; i < RUNS; i++) {
    let t0 = process.hrtime.bigint();
    const out = JSON.parse(await run(['mkpatch', '--from', o2, '--to', o1, '--target', server, '-o', patch, '--json']));
    mk.push(ms(t0));
    functions = out.replaced.length + out.added.length;
    const objs = fs.readdirSync(o1).filter((f) => /^memcached-.*\.o$/.test(f)).map((f) => path.join(o1, f));
    t0 = process.hrtime.bigint();
    execFileSync('cc', ['-o', path.join(work, 'relinked'), ...objs, '-levent', '-lpthread']);
    link.push(ms(t0));
  }

  const quiet = [];
  const during = [];
  const stopped = [];
  const wall = [];
  for (let i = 0; i < RUNS; i++) {
    const sock = path.join(work, `mc${i}.sock`);
    const srv = spawn(server, ['-s', sock, '-t', '4', ...(process.getuid() === 0 ? ['-u', 'root'] : [])], { stdio: 'ignore' });
    try {
      for (let k = 0; k < 250 && !fs.existsSync(sock); k++) await sleep(20);
      // Baseline: the same client, the same number of round trips, no attach.
      const base = await client(sock, (n) => n >= 3000);
      quiet.push(Math.max(...base));
      let done = false;
      const load = client(sock, () => done);
      await sleep(200);
      const t0 = process.hrtime.bigint();
      const res = JSON.parse(await run(['attach', String(srv.pid), patch, '--json']))[0].result;
      wall.push(ms(t0));
      stopped.push(res.timings.stoppedMs);
      await sleep(200);
      done = true;
      during.push(Math.max(...(await load)));
    } finally {
      srv.kill('SIGKILL');
    }
  }

  const f = (x) => x.toFixed(1).padStart(8);
  console.log(`memcached, every function that differs between -O2 and -O1 (${functions}), median of ${RUNS} runs (ms):`);
  console.log(`  mkpatch --from -O2 --to -O1            ${f(median(mk))}   (${Math.round(functions / (median(mk) / 1000))} functions/s)`);
  console.log(`  baseline: relink the program (cc)      ${f(median(link))}`);
  console.log(`  attach under load, wall                ${f(median(wall))}`);
  console.log(`  all threads stopped (hotload's count)  ${f(median(stopped))}`);
  console.log(`  client's longest round trip, attach    ${f(median(during))}`);
  console.log(`  baseline: longest, 3000 without attach ${f(median(quiet))}`);
  fs.rmSync(work, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
