#!/usr/bin/env node
// Save-to-live latency of `hotload watch` on the suite's real programs:
// - Lua 5.4 (scripts/lua-workdir.sh) runs a script that prints math.abs(-5)
//   every 2 ms; a one-line edit of math_abs in lmathlib.c is saved, and the
//   clock stops when the interpreter prints the new value;
// - memcached (an editable copy of scripts/build-memcached.sh's -O2 build)
//   serves a client that asks `version` every 2 ms; a one-line edit of the
//   version reply in proto_text.c is saved, and the clock stops at the new reply.
// watch compiles the saved file itself (make's command for its object),
// without make's tree walk and the link. Aim: save-to-live at most the
// compiler's own time plus 150 ms, each save against the compile watch ran
// for it (its `compilerMs`). Printed beside it, the baseline measured in this
// same run, interleaved with the saves: the compiler alone on that file (the
// same command, to another output, under the same load: for memcached, the
// client asking every 2 ms), and how watch's compiles compare with it (a
// watch that took CPU from its compiler would show there). BENCH_ROWS=1
// prints each save's figures on stderr (the medians of the parts do not add
// up to the median of the whole); BENCH_ONLY=lua or =memcached runs one
// program.
'use strict';
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const BIN = path.join(root, 'packages/cli/bin/hotload.js');
const ROUNDS = Number(process.env.ROUNDS ?? 7);
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const ms = (t) => Number(process.hrtime.bigint() - t) / 1e6;
const sleep = (n) => new Promise((r) => setTimeout(r, n));
/** Run a command to its end (asynchronously); a failure throws. */
const run = (cmd, args, cwd) =>
  new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { cwd, stdio: 'inherit' });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}`))));
  });
// The baselines' outputs, outside the watched trees (an object there would be one more object of the build).
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-bench-baseline-'));

// The programs it started and the directories it made (with watch's copies of
// a build, kept while a process runs its patches) go when it ends, and when a
// signal (Ctrl-C, a timeout) stops it: the `finally` blocks below do not run then.
const started = [];
const track = (child) => (started.push(child), child);
const dirs = [scratch];
const tmpdir = (prefix) => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
};
const cleanUp = () => {
  for (const c of started) c.kill('SIGKILL');
  const pids = new Set(started.map((c) => `hotload-watch-${c.pid}-`));
  for (const f of fs.readdirSync(os.tmpdir())) if ([...pids].some((p) => f.startsWith(p))) dirs.push(path.join(os.tmpdir(), f));
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
};
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanUp();
    process.exit(130);
  });
}

/**
 * Save ROUNDS edits of `file` in `dir` (watched for `pid` with `build`) and
 * time each until `seen(i)` resolves; `compile()` is the baseline, run once
 * before and once after each save.
 */
async function measure({ name, dir, pid, build, file, edit, seen, compile }) {
  const cc = [];
  // Run as the watch's compile runs: while this process goes on reading the
  // target's output (a synchronous run would block it, and measure a quieter
  // machine than the one the saves see).
  const compileOnce = async () => {
    const t = process.hrtime.bigint();
    await compile();
    cc.push(ms(t));
  };
  await compileOnce();
  const watch = track(spawn(process.execPath, [BIN, 'watch', '--json', '--pid', String(pid), '--build', build, file], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] }));
  const events = [];
  let buf = '';
  watch.stdout.on('data', (d) => {
    buf += d;
    const lines = buf.split('\n');
    buf = lines.pop();
    for (const l of lines) events.push({ ...JSON.parse(l), at: process.hrtime.bigint() });
  });
  const src = path.join(dir, file);
  const original = fs.readFileSync(src, 'utf8');
  const rows = [];
  try {
    while (!events.some((e) => e.event === 'ready')) await sleep(20);
    for (let i = 1; i <= ROUNDS; i++) {
      const n = events.length;
      const t = process.hrtime.bigint();
      fs.writeFileSync(src, edit(original, i));
      await seen(i, () => {
        const bad = events.slice(n).find((e) => e.event === 'refused' || e.event === 'build-failed' || e.event === 'no-change');
        if (bad) throw new Error(JSON.stringify(bad));
      });
      const latency = ms(t);
      while (!events.slice(n).some((e) => e.event === 'patched')) await sleep(5);
      const e = events.slice(n).find((x) => x.event === 'patched');
      if (!e.compiled) throw new Error(`watch ran the build command instead of compiling ${file}`);
      const change = events.slice(n).find((x) => x.event === 'change');
      if (process.env.BENCH_ROWS) console.error(JSON.stringify({ baselineBefore: cc[cc.length - 1], latency, seen: Number(change.at - t) / 1e6, patchedAt: Number(e.at - t) / 1e6, total: e.totalMs, build: e.buildMs, compiler: e.compilerMs, patch: e.patchMs, apply: e.applyMs }));
      rows.push({ latency, seen: Number(change.at - t) / 1e6, build: e.buildMs, compiler: e.compilerMs, beyond: latency - e.compilerMs, patch: e.patchMs, apply: e.applyMs, stopped: e.stoppedMs });
      await sleep(800); // the relink runs after the save; let it end before the baseline's turn
      await compileOnce();
    }
  } finally {
    watch.kill('SIGINT');
    await sleep(300);
    watch.kill('SIGKILL');
  }
  const col = (k) => median(rows.map((r) => r[k]));
  const ccMs = median(cc);
  console.log(`watch latency on ${name}, median of ${ROUNDS} saves:`);
  console.log(`  save -> new code running       ${col('latency').toFixed(0)} ms`);
  console.log(`    save seen (inotify, settled)  ${col('seen').toFixed(0)} ms`);
  console.log(`    compile (no make)             ${col('build').toFixed(0)} ms`);
  console.log(`    diff + make the patch         ${col('patch').toFixed(0)} ms`);
  console.log(`    attach (load near, redirect)  ${col('apply').toFixed(0)} ms (all threads stopped ${col('stopped').toFixed(2)} ms)`);
  console.log(`  baseline: the compiler alone   ${ccMs.toFixed(0)} ms (median of ${cc.length}, interleaved)`);
  // The aim's measure: each save against its own compile (the compiler that
  // watch ran for it, timed by watch from its start to its end). Everything
  // else between the save and the new reply is watch's: noticing the save,
  // waiting for make's answers, diff, patch, attach.
  console.log(`  beyond the compiler's own time: ${col('beyond').toFixed(0)} ms, each save against its own compile (aim: at most 150 ms)`);
  // The check that watch does not slow its compile down: its compiles against
  // the compiler alone just before and after each save. This VM's speed drifts
  // (gcc on one file took from 1.0 s to 1.8 s in one run), so this moves by
  // a tenth of a second between runs; it is the aim's measure only when watch
  // takes CPU from its own compiler.
  const slower = median(rows.map((r, i) => r.compiler - (cc[i] + cc[i + 1]) / 2));
  console.log(`    watch's compile against the compiler alone beside it: ${slower >= 0 ? '+' : ''}${slower.toFixed(0)} ms (noise: this VM's compile times drift)`);
  const first = rows[0];
  console.log(`  the first save after ready:    ${first.latency.toFixed(0)} ms, ${first.beyond.toFixed(0)} ms beyond its compile (patch ${first.patch.toFixed(0)} ms, attach ${first.apply.toFixed(0)} ms)`);
}

async function lua() {
  const dir = tmpdir('hotload-bench-watch-');
  const bin = execFileSync(path.join(root, 'scripts/lua-workdir.sh'), [dir], { encoding: 'utf8' }).trim().split('\n').pop();
  const script = path.join(dir, 'abs.lua');
  fs.writeFileSync(script, 'while true do\n  print(math.abs(-5))\n  io.stdout:flush()\n  local t = os.clock()\n  while os.clock() - t < 0.002 do end\nend\n');
  const cflags = /^CFLAGS = (.*)$/m.exec(fs.readFileSync(path.join(dir, 'GNUmakefile'), 'utf8'))[1].split(/\s+/);
  const target = track(spawn(bin, [script], { stdio: ['ignore', 'pipe', 'inherit'] }));
  // Woken by the interpreter's output, not by polling: a polling loop here
  // would take CPU from the compile it measures (two cores, one running Lua).
  let last = '';
  let onLine = () => {};
  target.stdout.on('data', (d) => {
    const lines = String(d).trim().split('\n');
    last = lines[lines.length - 1];
    onLine();
  });
  try {
    await measure({
      name: 'Lua 5.4 (lmathlib.c, one-line edit of math_abs)',
      dir,
      pid: target.pid,
      build: 'make -s lua',
      file: 'lmathlib.c',
      edit: (text, i) => text.replace(/(static int math_abs [^]*?)lua_pushinteger\(L, n\);/, `$1lua_pushinteger(L, n + ${1000 * i});`),
      seen: (i, check) => new Promise((resolve, reject) => {
        const t = setInterval(() => {
          try {
            check();
          } catch (e) {
            clearInterval(t);
            reject(e);
          }
        }, 50);
        onLine = () => {
          if (last !== String(5 + 1000 * i)) return;
          clearInterval(t);
          onLine = () => {};
          resolve();
        };
      }),
      compile: () => run('gcc', [...cflags, '-c', 'lmathlib.c', '-o', path.join(scratch, 'lmathlib.o')], dir),
    });
  } finally {
    target.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function memcached() {
  const o2 = execFileSync(path.join(root, 'scripts/build-memcached.sh'), { encoding: 'utf8' }).trim().split('\n').slice(-2)[0];
  const dir = tmpdir('hotload-bench-watch-mc-');
  execFileSync('cp', ['-a', `${o2}/.`, dir]); // an editable copy, stamps kept
  const sock = path.join(dir, 'mc.sock');
  const server = track(spawn(path.join(dir, 'memcached'), ['-s', sock, '-t', '4', ...(process.getuid() === 0 ? ['-u', 'root'] : [])], { stdio: 'ignore' }));
  for (let i = 0; i < 250 && !fs.existsSync(sock); i++) await sleep(20);
  // The compiler's own command for the object (automake's line, from make), to another output.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !['MAKEFLAGS', 'MFLAGS', 'MAKELEVEL'].includes(k)));
  const line = execFileSync('make', ['--no-print-directory', '-n', '-W', 'proto_text.c', 'memcached-proto_text.o'], { cwd: dir, env, encoding: 'utf8' }).split('\n').find((l) => /\s-c\s/.test(l));
  const baseline = line.replace(/-MF \S+/, `-MF ${path.join(scratch, 'proto_text.d')}`).replace(/-o \S+/, `-o ${path.join(scratch, 'proto_text.o')}`);
  const client = net.createConnection(sock);
  await new Promise((r) => client.once('connect', r));
  client.setEncoding('latin1');
  const version = () => new Promise((resolve) => {
    let got = '';
    const on = (d) => {
      got += d;
      if (!got.endsWith('\r\n')) return;
      client.off('data', on);
      resolve(got);
    };
    client.on('data', on);
    client.write('version\r\n');
  });
  try {
    await measure({
      name: 'memcached (proto_text.c, one-line edit of the version reply)',
      dir,
      pid: server.pid,
      build: 'make -s memcached',
      file: 'proto_text.c',
      edit: (text, i) => text.replace('out_string(c, "VERSION " VERSION);', `out_string(c, "VERSION " VERSION "-live${i}");`),
      seen: async (i, check) => {
        for (;;) {
          if ((await version()).includes(`-live${i}\r\n`)) return;
          check();
          await sleep(2);
        }
      },
      // Under the load the saves see: while a save is waited for, this client
      // asks `version` every 2 ms, and memcached and this process take CPU from
      // the compile; the baseline compiles while the same asking goes on.
      compile: async () => {
        let asking = true;
        const loop = (async () => {
          while (asking) {
            await version();
            await sleep(2);
          }
        })();
        try {
          await run('sh', ['-c', baseline], dir);
        } finally {
          asking = false;
          await loop;
        }
      },
    });
  } finally {
    client.destroy();
    server.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// BENCH_ONLY=lua or =memcached runs one of them.
const only = process.env.BENCH_ONLY;
[lua, memcached]
  .filter((f) => !only || f.name === only)
  .reduce((p, f) => p.then(f), Promise.resolve())
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(cleanUp);
