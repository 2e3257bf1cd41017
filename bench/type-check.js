#!/usr/bin/env node
// What comparing type layouts costs a patch from a rebuild: on memcached's
// whole build (its -O2 objects against its -O1 objects: every object file
// differs), the time of `mkpatch --from/--to` in-process, next to the time of
// reading and comparing the layouts of every type of both builds alone (the
// part typeRefusals adds). Interleaved run by run (this VM is noisy); medians
// of RUNS runs (default 5). Aim: the type check under 10% of mkpatch.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const { mkpatchFromBuilds, objectFiles } = require(path.join(root, 'packages/patch/dist'));
const { ElfFile, layoutChanges, typeLayouts } = require(path.join(root, 'packages/elf/dist'));
const RUNS = Number(process.env.RUNS || 5);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

const builds = execFileSync('bash', [path.join(root, 'scripts/build-memcached.sh')], { encoding: 'utf8' }).trim().split('\n');
const o2 = builds.find((l) => /O2$/.test(l));
const o1 = builds.find((l) => /O1$/.test(l));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-bench-types-'));

function typesOnly() {
  const a = objectFiles(o2);
  const b = objectFiles(o1);
  let types = 0;
  for (const [rel, file] of b) {
    const ta = typeLayouts(ElfFile.open(a.get(rel)));
    const tb = typeLayouts(ElfFile.open(file));
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
  return types;
}

const mk = [];
const ty = [];
let types = 0;
for (let i = 0; i < RUNS; i++) {
  let t0 = process.hrtime.bigint();
  mkpatchFromBuilds({ from: o2, to: o1, target: path.join(o2, 'memcached'), out: path.join(work, `p${i}.so`) });
  mk.push(ms(t0));
  t0 = process.hrtime.bigint();
  types = typesOnly();
  ty.push(ms(t0));
}
const f = (x) => x.toFixed(0).padStart(7);
console.log(`type layouts, memcached -O2 -> -O1 (${objectFiles(o1).size} object files, ${types} type definitions), median of ${RUNS} runs (ms)`);
console.log(`  mkpatch --from --to, whole (type check included) ${f(median(mk))}`);
console.log(`  the type check alone (read + compare, both builds) ${f(median(ty))}   ${((100 * median(ty)) / median(mk)).toFixed(1)}% of mkpatch`);
fs.rmSync(work, { recursive: true, force: true });
