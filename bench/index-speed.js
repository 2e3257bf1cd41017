#!/usr/bin/env node
// Indexing speed of the pad-index pass, in functions per second after Node has
// started, on a generated program of 100,000 functions and on the Lua 5.4
// interpreter; next to the baseline `readelf -sW` (which only lists the
// symbols, without reading a single pad), timed on the same files in this run.
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { ElfFile, indexPads } = require('../packages/elf/dist');

const root = path.resolve(__dirname, '..');
const cache = process.env.HOTLOAD_CACHE || path.join(os.homedir(), '.cache/hotload');
const N = 100000;
const RUNS = Number(process.env.RUNS || 5);

function big() {
  const dir = path.join(cache, 'bench');
  const bin = path.join(dir, `fns${N}`);
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(dir, { recursive: true });
  // 8 files compiled in parallel: one file of 100,000 functions takes gcc minutes.
  const parts = 8;
  const objs = [];
  for (let p = 0; p < parts; p++) {
    const lines = [];
    for (let i = p; i < N; i += parts) lines.push(`int f${i}(int x) { return x * ${i % 97} + ${i}; }`);
    if (p === 0) lines.push('int main(void) { return f0(1) == 0; }');
    fs.writeFileSync(path.join(dir, `p${p}.c`), lines.join('\n') + '\n');
    objs.push(path.join(dir, `p${p}.o`));
  }
  process.stderr.write(`building ${bin} (${N} functions, once)...\n`);
  const jobs = objs.map((o, p) => require('child_process').spawn('cc', ['-O1', '-fpatchable-function-entry=16,14', '-c', path.join(dir, `p${p}.c`), '-o', o], { stdio: 'inherit' }));
  return Promise.all(jobs.map((j) => new Promise((r, x) => j.on('exit', (c) => (c === 0 ? r() : x(new Error('cc failed'))))))).then(() => {
    execFileSync('cc', [...objs, '-o', bin]);
    return bin;
  });
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function time(fn) {
  const t = process.hrtime.bigint();
  const r = fn();
  return { ms: Number(process.hrtime.bigint() - t) / 1e6, r };
}

async function main() {
  const files = [[`generated, ${N} functions`, await big()]];
  const lua = path.join(cache, 'lua5.4/lua');
  if (fs.existsSync(lua)) files.push(['Lua 5.4 interpreter', lua]);
  else console.log('(Lua not built: run `make lua` for its row)');
  console.log(`pad index, median of ${RUNS} runs                 functions      pads   hotload index      fn/s   readelf -sW (baseline)`);
  for (const [name, file] of files) {
    indexPads(ElfFile.open(file)); // warm up the JIT
    const runs = [];
    let idx;
    for (let i = 0; i < RUNS; i++) {
      const { ms, r } = time(() => indexPads(ElfFile.open(file)));
      runs.push(ms);
      idx = r;
    }
    const base = [];
    for (let i = 0; i < RUNS; i++) base.push(time(() => spawnSync('readelf', ['-sW', file], { maxBuffer: 1 << 30 })).ms);
    const ms = median(runs);
    const fps = idx.functions.length / (ms / 1000);
    console.log(
      `  ${name.padEnd(42)} ${String(idx.functions.length).padStart(9)} ${String(idx.padEntries).padStart(9)} ${ms.toFixed(1).padStart(12)} ms ${Math.round(fps).toLocaleString('en').padStart(11)}   ${median(base).toFixed(1).padStart(8)} ms`,
    );
  }
  console.log('  (aim: at least 500,000 functions per second; readelf only lists symbols, it reads no pad)');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
