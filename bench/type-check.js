#!/usr/bin/env node
// What comparing type layouts costs a patch from a rebuild: on memcached's
// whole build (its -O2 objects against its -O1 objects: every object file
// differs), the time of `mkpatch --from/--to`, next to the time of reading and
// comparing the layouts of every type of both builds (the part typeRefusals
// adds). Each figure comes from a fresh process, as a one-shot `hotload
// mkpatch` runs (in one process the second run would reuse the parsed files
// and their types); the ELF files are opened before the type check's clock
// starts, since mkpatch opens them anyway. Interleaved run by run (this VM is
// noisy); medians of RUNS runs (default 5). Aim: the type check under 10% of
// mkpatch.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const RUNS = Number(process.env.RUNS || 5);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// One measurement in this (fresh) process: `node type-check.js --one mkpatch|types O2 O1 OUT`.
if (process.argv[2] === '--one') {
  const [mode, o2, o1, out] = process.argv.slice(3);
  const { mkpatchFromBuilds, objectFiles } = require(path.join(root, 'packages/patch/dist'));
  const { ElfFile, layoutChanges, typeLayouts } = require(path.join(root, 'packages/elf/dist'));
  const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
  if (mode === 'mkpatch') {
    const t0 = process.hrtime.bigint();
    mkpatchFromBuilds({ from: o2, to: o1, target: path.join(o2, 'memcached'), out });
    console.log(JSON.stringify({ ms: ms(t0) }));
  } else {
    const a = objectFiles(o2);
    const b = objectFiles(o1);
    const pairs = [...b].filter(([rel]) => a.has(rel)).map(([rel, file]) => [ElfFile.open(a.get(rel)), ElfFile.open(file)]);
    let types = 0;
    const t0 = process.hrtime.bigint();
    for (const [ea, eb] of pairs) {
      const ta = typeLayouts(ea);
      const tb = typeLayouts(eb);
      for (const ub of tb.units) {
        const ua = ta.units.find((x) => x.unit === ub.unit);
        if (!ua) continue;
        for (const [k, lb] of ub.layouts) {
          types++;
          const la = ua.layouts.get(k);
          if (la) layoutChanges(la, lb);
        }
      }
    }
    console.log(JSON.stringify({ ms: ms(t0), types, files: pairs.length }));
  }
  process.exit(0);
}

const builds = execFileSync('bash', [path.join(root, 'scripts/build-memcached.sh')], { encoding: 'utf8' }).trim().split('\n');
const o2 = builds.find((l) => /O2$/.test(l));
const o1 = builds.find((l) => /O1$/.test(l));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-bench-types-'));
const one = (mode, i) => JSON.parse(execFileSync(process.execPath, [__filename, '--one', mode, o2, o1, path.join(work, `p${i}.so`)], { encoding: 'utf8' }));

const mk = [];
const ty = [];
let last;
for (let i = 0; i < RUNS; i++) {
  mk.push(one('mkpatch', i).ms);
  last = one('types', i);
  ty.push(last.ms);
}
const f = (x) => x.toFixed(0).padStart(7);
console.log(`type layouts, memcached -O2 -> -O1 (${last.files} object files, ${last.types} type definitions), each a fresh process, median of ${RUNS} runs (ms)`);
console.log(`  mkpatch --from --to, whole (type check included) ${f(median(mk))}`);
console.log(`  the type check alone (read + compare, both builds) ${f(median(ty))}   ${((100 * median(ty)) / median(mk)).toFixed(1)}% of mkpatch (aim: under 10%)`);
fs.rmSync(work, { recursive: true, force: true });
