#!/usr/bin/env node
// What comparing type layouts costs a patch from a rebuild, on memcached's
// whole build, in two cases:
// - its -O2 objects against its -O1 objects: every object file differs (the
//   issue's measure, the worst case);
// - its -O2 objects against a copy with one source edited and rebuilt
//   (proto_text.c, the version reply): what a one-file edit costs, the
//   everyday case (identical object files are not compared at all).
// Each figure from a fresh process, as a one-shot `hotload mkpatch` runs (in
// one process a second run would reuse the parsed files and their types),
// interleaved run by run (this VM is noisy), medians of RUNS runs (default 5):
// - mkpatch as it runs: it compares the layouts while the assembler and
//   linker make the patch (another process);
// - mkpatch with no type comparison (every build's types replaced by none, for
//   this measure only);
// - the comparison alone (reading and comparing every type of the object
//   files that differ; the ELF files are opened before its clock starts, as
//   mkpatch opens them anyway).
// Aim: what the comparison adds to mkpatch (the first minus the second, the
// median of the runs' differences, each run against the one beside it) under
// 10% of mkpatch. The comparison runs only after the link has started (it is
// made beside the linker), so what it adds is all in mkpatch's last stretch,
// from the link's start to its end; the code generation before that varies by
// as much as ±80 ms from one process to the next on this VM, whatever the
// comparison does. So the figure is also given from that stretch alone (the
// same pairing): the same quantity, without that noise. Both are printed.
// (Running it in a worker thread beside the code diff was tried: on two cores
// it made mkpatch slower, not faster, with the worker at the lowest priority
// too; so does another process beside it.)
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

// One measurement in this (fresh) process: `node type-check.js --one MODE O2 O1 OUT`.
function one(mode, o2, o1, out) {
  const { mkpatchFromBuilds, objectFiles } = require(path.join(root, 'packages/patch/dist'));
  const { Build } = require(path.join(root, 'packages/patch/dist/diff-builds'));
  const { ElfFile, changedLayouts, typeLayouts } = require(path.join(root, 'packages/elf/dist'));
  const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
  if (mode.startsWith('mkpatch')) {
    if (mode === 'mkpatch-none') Build.prototype.types = () => ({ units: [] });
    const { runProgram } = require(path.join(root, 'packages/patch/dist/run-program'));
    const t0 = process.hrtime.bigint();
    // The last program mkpatch starts is the link (the assembler, then the linker).
    let lastStart = t0;
    const run = (file, args, opts) => {
      lastStart = process.hrtime.bigint();
      return runProgram(file, args, opts);
    };
    return mkpatchFromBuilds({ from: o2, to: o1, target: path.join(o2, 'memcached'), out, run }).then((r) => console.log(JSON.stringify({ ms: ms(t0), fromLink: ms(lastStart), replaced: r.replaced.length })));
  }
  const { sameFile } = require(path.join(root, 'packages/patch/dist/diff-builds'));
  const a = objectFiles(o2);
  const b = objectFiles(o1);
  const pairs = [...b].filter(([rel, file]) => a.has(rel) && !sameFile(a.get(rel), file)).map(([rel, file]) => [ElfFile.open(a.get(rel)), ElfFile.open(file)]);
  const t0 = process.hrtime.bigint();
  const read = pairs.map(([ea, eb]) => [typeLayouts(ea), typeLayouts(eb)]);
  for (const [ta, tb] of read) [...changedLayouts(ta, tb)];
  const took = ms(t0);
  // Counted off the clock: a unit whose entries are the other build's has its layouts worked out only here.
  let types = 0;
  for (const [, tb] of read) for (const u of tb.units) types += u.layouts.size;
  console.log(JSON.stringify({ ms: took, types, files: pairs.length }));
  return Promise.resolve();
}

function main() {
  const builds = execFileSync('bash', [path.join(root, 'scripts/build-memcached.sh')], { encoding: 'utf8' }).trim().split('\n');
  const o2 = builds.find((l) => /O2$/.test(l));
  const o1 = builds.find((l) => /O1$/.test(l));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-bench-types-'));
  try {
    scenario('memcached -O2 -> -O1', o2, o1, work);
    // One source edited and rebuilt in a copy of the -O2 build (its stamps kept, so make rebuilds that one object).
    const edited = path.join(work, 'edited');
    execFileSync('cp', ['-a', `${o2}/.`, edited]);
    const src = path.join(edited, 'proto_text.c');
    fs.writeFileSync(src, fs.readFileSync(src, 'utf8').replace('"VERSION " VERSION', '"VERSION (edited) " VERSION'));
    execFileSync('make', ['-s', 'memcached'], { cwd: edited, stdio: ['ignore', 'ignore', 'inherit'] });
    scenario('memcached -O2 -> proto_text.c edited', o2, edited, work);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function scenario(name, from, to, work) {
  const run = (mode, i) => JSON.parse(execFileSync(process.execPath, [__filename, '--one', mode, from, to, path.join(work, `p${i}.so`)], { encoding: 'utf8' }));
  const fig = { mkpatch: [], none: [], alone: [], tail: [], tailNone: [] };
  let last;
  for (let i = 0; i < RUNS; i++) {
    const a = run('mkpatch', i);
    const b = run('mkpatch-none', i);
    fig.mkpatch.push(a.ms);
    fig.none.push(b.ms);
    fig.tail.push(a.fromLink);
    fig.tailNone.push(b.fromLink);
    last = run('types', i);
    fig.alone.push(last.ms);
  }
  const [mk, none, alone] = [fig.mkpatch, fig.none, fig.alone].map(median);
  // Run by run (each mkpatch against the one without the comparison right
  // after it): the machine's drift between runs cancels out.
  const adds = median(fig.mkpatch.map((m, i) => m - fig.none[i]));
  const f = (x) => x.toFixed(0).padStart(6);
  console.log(`type layouts, ${name} (${last.files === 1 ? '1 object file differs' : `${last.files} object files differ`}, ${last.types} type definitions), each a fresh process, median of ${RUNS} runs (ms)`);
  console.log(`  mkpatch --from --to (as it runs)                    ${f(mk)}`);
  console.log(`  mkpatch, no type comparison (for this measure)      ${f(none)}`);
  console.log(`  the comparison alone (read + compare, both builds)  ${f(alone)}`);
  console.log(`  what the comparison adds to mkpatch (run by run)    ${f(adds)}   ${((100 * adds) / mk).toFixed(1)}% of mkpatch (aim: under 10%)`);
  console.log(`    (the difference of the two medians:               ${f(mk - none)}   ${((100 * (mk - none)) / mk).toFixed(1)}%)`);
  const tailAdds = median(fig.tail.map((t, i) => t - fig.tailNone[i]));
  console.log(`  the same from the link's start to mkpatch's end      ${f(tailAdds)}   ${((100 * tailAdds) / mk).toFixed(1)}% of mkpatch (${f(median(fig.tailNone)).trim()} ms without the comparison, ${f(median(fig.tail)).trim()} with)`);
}

if (process.argv[2] === '--one') one(...process.argv.slice(3)).then(() => process.exit(0));
else main();
