#!/usr/bin/env node
// Wall time to roll one patch out to 1, 10 and 100 processes with the rollout
// API (one Node process, canary first, then 8 at a time), next to the baseline
// of running `hotload attach PID patch.so` once per process from a shell loop,
// measured in this same run. Aim: 100 processes in under 3 seconds.
'use strict';
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const api = require('../packages/api/dist');

const root = path.resolve(__dirname, '..');
const target = path.join(root, 'fixtures/build/target');
const BIN = path.join(root, 'packages/cli/bin/hotload.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-bench-rollout-'));

function patch(k) {
  const src = path.join(work, `r${k}.c`);
  const out = path.join(work, `r${k}.so`);
  fs.writeFileSync(src, `#include <hotload.h>\nint compute_v2(int x) { return x + 1000 + ${k}; }\nHOTLOAD_REPLACE(compute, compute_v2);\n`);
  api.mkpatch({ sources: [src], target, out });
  return out;
}

async function main() {
  // 100 idle-ish processes (each prints a line every 20 ms).
  const procs = Array.from({ length: 100 }, () => spawn(target, ['loop'], { stdio: 'ignore' }));
  await new Promise((r) => setTimeout(r, 500));
  const pids = procs.map((p) => p.pid);
  const rows = [];
  try {
    for (const [i, n] of [1, 10, 100].entries()) {
      const p = patch(i);
      const plan = api.validatePlan({ targets: { pids: pids.slice(0, n) }, canary: 1, parallel: 8, steps: [{ apply: p }] });
      const t0 = process.hrtime.bigint();
      const res = await api.rollout(plan);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (res.outcome !== 'success') throw new Error(`rollout to ${n}: ${res.outcome}: ${JSON.stringify(res.processes.find((x) => x.status !== 'applied'))}`);
      rows.push([n, ms]);
    }
    // Baseline: one CLI run per process (10 processes, extrapolated per process).
    const p = patch(9);
    const t0 = process.hrtime.bigint();
    for (const pid of pids.slice(0, 10)) execFileSync(process.execPath, [BIN, 'attach', String(pid), p]);
    const perCli = Number(process.hrtime.bigint() - t0) / 1e6 / 10;
    console.log('rollout of one patch            processes      wall    per process   baseline: `hotload attach` per process');
    for (const [n, ms] of rows) {
      console.log(`  hotload rollout (API)       ${String(n).padStart(9)} ${ms.toFixed(0).padStart(7)} ms ${(ms / n).toFixed(1).padStart(9)} ms   ${(perCli * n).toFixed(0).padStart(7)} ms (${perCli.toFixed(1)} ms each, measured on 10)`);
    }
    console.log('  (aim: 100 processes in under 3 s; the first row includes loading the ELF files, later rows reuse them)');
  } finally {
    for (const c of procs) c.kill('SIGKILL');
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
