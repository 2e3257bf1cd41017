#!/usr/bin/env node
// How long does the target stall while a patch goes in, and how long does the
// attach take? hotload against its baseline, `gdb -p PID -batch -ex 'call
// dlopen(...)'`, measured in this same run on the same target.
//
// The target (fixtures/build/target stall 1) has a thread spinning on the
// clock, recording its longest gap; every 50 ms it prints them. A stall is
// the longest gap seen in the lines around one attach. This machine stalls by
// itself for up to ~0.6 ms, so hotload's own count of how long the threads were
// stopped (--json timings) is printed too. Medians of RUNS runs (default 10).
'use strict';
const { spawn, execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const FIX = path.join(root, 'fixtures/build');
const BIN = path.join(root, 'packages/cli/bin/hotload.js');
const RUNS = Number(process.env.RUNS || 10);
// Spinning threads in the target; one leaves hotload (or gdb) a core of this 2-core machine.
const SPINNERS = Number(process.env.SPINNERS || 1);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-bench-'));

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startTarget(bin, args) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop();
    lines.push(...parts);
  });
  return { child, lines };
}

/** Run a command without blocking this event loop (the target's lines keep flowing). */
function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}\n${err}`))));
  });
}

/** Longest gap (us) the target's spinning threads printed from just before `fn` until 200 ms after it. */
async function stallAround(t, fn) {
  const from = t.lines.length;
  const t0 = process.hrtime.bigint();
  const res = await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  await sleep(200);
  const gaps = t.lines.slice(from).filter((l) => l.startsWith('gaps')).flatMap((l) => l.split(' ').slice(1, -2).map(Number));
  return { wall, stallMs: Math.max(...gaps) / 1000, res };
}

function makePatch(target, k, many) {
  const src = path.join(work, `p${k}.c`);
  const out = path.join(work, `p${k}.so`);
  if (many) fs.copyFileSync(many, src);
  else fs.writeFileSync(src, `#include <hotload.h>\nint compute_v2(int x) { return x + 1000 + ${k}; }\nHOTLOAD_REPLACE(compute, compute_v2);\n`);
  execFileSync(process.execPath, [BIN, 'mkpatch', src, '--target', target, '-o', out]);
  return out;
}

async function hotloadAttach(t, p) {
  const { wall, stallMs, res } = await stallAround(t, async () => JSON.parse(await run(process.execPath, [BIN, 'attach', String(t.child.pid), p, '--json']))[0].result);
  return { wall, stallMs, stoppedMs: res.timings.stoppedMs, maxStopMs: res.timings.threadStopMaxMs, dlopenMs: res.timings.loadMs, hostMs: res.timings.hostPausedMs, fns: res.functions.length };
}

async function measureHotload(bin, patches) {
  const t = startTarget(bin, ['stall', String(SPINNERS)]);
  await sleep(300);
  const rows = [];
  for (const p of patches) {
    rows.push(await hotloadAttach(t, p));
    await sleep(60);
  }
  t.child.kill('SIGKILL');
  return rows;
}

/**
 * hotload, the gdb baseline and Node's start-up alone, interleaved run by run
 * on one target (this VM is noisy: measured one after the other, a slow spell
 * lands on one method only). A baseline that cannot run is reported with the
 * reason (gdb absent, or failing as it does on CPUs whose extended state it
 * cannot write back) and the rest goes on.
 */
async function measureInterleaved(bin, runs) {
  const t = startTarget(bin, ['stall', String(SPINNERS)]);
  await sleep(300);
  const h = [];
  const g = [];
  const nodeOnly = [];
  let gdbProblem = spawnSync('gdb', ['--version']).status === 0 ? undefined : 'not installed';
  for (let k = 0; k < runs; k++) {
    h.push(await hotloadAttach(t, makePatch(bin, k)));
    await sleep(60);
    if (!gdbProblem) {
      const p = makePatch(bin, 100 + k);
      try {
        const { wall, stallMs, res } = await stallAround(t, () => run('gdb', ['-p', String(t.child.pid), '-batch', '-nx', '-ex', `call (void*)dlopen("${p}", 2)`]));
        if (!/\$1 = \(void \*\) 0x[0-9a-f]*[1-9a-f]/.test(res)) throw new Error(`dlopen returned no handle: ${res.trim().split('\n').pop()}`);
        g.push({ wall, stallMs });
      } catch (e) {
        gdbProblem = `failed: ${String(e.message).split('\n').filter((l) => /error|Couldn't|fail|returned/i.test(l))[0] ?? String(e.message).split('\n')[0]}`;
      }
      await sleep(60);
    }
    nodeOnly.push(await stallAround(t, () => run(process.execPath, ['-e', ''])));
  }
  t.child.kill('SIGKILL');
  return { h, g, nodeOnly, gdbProblem };
}

async function main() {
  const target = path.join(FIX, 'target');
  const { h, g, nodeOnly, gdbProblem } = await measureInterleaved(target, RUNS);

  // 1,000 functions: a generated target and patch.
  const gen = path.join(work, 'gen');
  fs.mkdirSync(gen);
  execFileSync('sh', [path.join(root, 'fixtures/src/gen-many.sh'), '1000', gen]);
  const big = path.join(gen, 'target-many1000');
  execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-pthread', '-DWITH_MANY', path.join(root, 'fixtures/src/target.c'), path.join(gen, 'many.c'), '-o', big, '-ldl']);
  const bigPatches = Array.from({ length: Math.min(RUNS, 10) }, (_, k) => {
    const src = path.join(gen, `mp${k}.c`);
    fs.writeFileSync(src, fs.readFileSync(path.join(gen, 'many-patch.c'), 'utf8') + `\nint hotload_bench_variant_${k};\n`);
    return makePatch(big, `m${k}`, src);
  });
  const hb = [];
  for (const p of bigPatches) {
    // A fresh process each time: 1,000 fresh prologues to write.
    const rows = await measureHotload(big, [p]);
    hb.push(rows[0]);
  }

  const f = (x) => x.toFixed(3).padStart(9);
  console.log(`attach pause, median of ${RUNS} runs (ms)            stopped(all)  thread stop   target stall  dlopen     wall`);
  console.log(`  hotload attach, 1 function                    ${f(median(h.map((r) => r.stoppedMs)))}     ${f(median(h.map((r) => r.maxStopMs)))}     ${f(median(h.map((r) => r.stallMs)))}  ${f(median(h.map((r) => r.dlopenMs)))} ${f(median(h.map((r) => r.wall)))}`);
  if (g.length && !gdbProblem) console.log(`  gdb -p PID -batch -ex 'call dlopen(...)'      ${'-'.padStart(9)}     ${'-'.padStart(9)}     ${f(median(g.map((r) => r.stallMs)))}  ${'-'.padStart(9)} ${f(median(g.map((r) => r.wall)))}`);
  else console.log(`  gdb -p PID -batch -ex 'call dlopen(...)': baseline not measured: gdb ${gdbProblem}`);
  console.log(`  node -e '' (start-up alone, no ptrace)       ${'-'.padStart(9)}     ${'-'.padStart(9)}     ${f(median(nodeOnly.map((r) => r.stallMs)))}  ${'-'.padStart(9)} ${f(median(nodeOnly.map((r) => r.wall)))}`);
  console.log(`  hotload attach, 1,000 functions (${hb.length} runs)    ${f(median(hb.map((r) => r.stoppedMs)))}     ${f(median(hb.map((r) => r.maxStopMs)))}     ${f(median(hb.map((r) => r.stallMs)))}  ${f(median(hb.map((r) => r.dlopenMs)))} ${f(median(hb.map((r) => r.wall)))}`);
  console.log('  (stopped = hotload\'s own count of the all-threads stop for the code writes, from the first interrupt to the last resume;');
  console.log('   thread stop = the longest any one thread was stopped, from its stop to its resume;');
  console.log('   target stall = longest gap seen by the target\'s spinning thread, which also counts this VM\'s own stalls and');
  console.log('   CPU sharing on 2 cores (see the node -e \'\' row); dlopen runs on one borrowed thread while the others run;');
  console.log('   wall includes Node start-up)');
  fs.rmSync(work, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
