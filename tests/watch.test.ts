// `hotload watch`: edit a source file of a running program, save, and the
// process runs the new code. First on the fixture (fixtures/src/diff.c, built
// by a two-rule Makefile), then on the real program (Lua 5.4 from Debian's
// sources, scripts/lua-workdir.sh).
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BIN, ROOT, Target, edit, hotload, removeAtEnd, sleep, tmpdir, until, writeModuleTree } from './helpers';
import { Client, memcachedBuilds, startMemcached } from './memcached-client';
import { Watch } from './watch-client';

/** A copy of fixtures/src/diff.c with a two-rule Makefile, built with `cflags`: a program and its object. */
function fixtureBuild(prefix: string, cflags = '-O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections'): string {
  const dir = tmpdir(prefix);
  fs.copyFileSync(path.join(ROOT, 'fixtures/src/diff.c'), path.join(dir, 'diff.c'));
  fs.writeFileSync(path.join(dir, 'Makefile'), `CFLAGS = ${cflags}\n` + 'diff: diff.o\n\t$(CC) diff.o -o diff\ndiff.o: diff.c\n\t$(CC) $(CFLAGS) -c diff.c -o diff.o\n');
  execFileSync('make', ['-s'], { cwd: dir });
  return dir;
}

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** The fixture built with `cflags`, running, and watched: its directory, process, watch and ready event. */
/**
 * Start `program`, wait for its first line matching `first`, then watch it
 * from `dir` (`--pid` and `watchArgs`) until ready; both are stopped after
 * the test.
 */
async function watchProgram(dir: string, program: string, args: string[], first: RegExp, watchArgs: string[], readyMs = 10000) {
  const t = Target.start(program, args);
  cleanup.push(() => t.stop());
  const line = await t.waitFor(first);
  const w = new Watch(dir, ['--pid', String(t.pid), ...watchArgs]);
  cleanup.push(() => w.stop());
  return { t, w, line, ready: await w.event('ready', 0, readyMs) };
}

async function watchedFixture(prefix: string, opts: { cflags?: string; watchArgs?: string[] } = {}) {
  const dir = fixtureBuild(prefix, opts.cflags);
  return { dir, ...(await watchProgram(dir, path.join(dir, 'diff'), ['loop'], /^constant=/, [...(opts.watchArgs ?? []), 'diff.c'])) };
}

describe('on the fixture', () => {
  let dir: string;
  let t: Target;
  let w: Watch;
  const parse = (line: string) => Object.fromEntries([...line.matchAll(/(\w+)=(-?\d+)/g)].map((m) => [m[1], Number(m[2])]));
  /** A line printed after now (not one already on its way). */
  const values = async () => parse((await t.fresh(/^constant=/))[0]);
  /** Two consecutive lines printed after now. */
  const pair = async () => (await t.fresh(/^constant=/, 2)).map(parse);

  beforeEach(async () => {
    const ready = await watchedFixture('hotload-watch-');
    ({ dir, t, w } = ready);
    expect(ready.ready.warnings).toEqual([]);
  });

  test('each save is patched in: a constant, a static counter (the count carries on), a new static (carries on across saves)', async () => {
    let n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
    let e = await w.event('patched', n);
    expect(e.changed).toEqual(['constant']);
    expect(path.basename(e.patch)).toBe('diff-constant-1.so'); // the program, what changed, the save: as profilers name it
    expect((await values()).constant).toBe(111);

    const before = await values();
    n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'counter += 1;', 'counter += 3;');
    e = await w.event('patched', n);
    expect(e.changed).toEqual(['count']);
    expect(e.replaced).toEqual(['constant', 'count']); // each patch carries every change so far
    expect(path.basename(e.patch)).toBe('diff-count-2.so');
    const [a, b] = await pair();
    expect(a.count).toBeGreaterThan(before.count);
    expect(b.count - a.count).toBe(3);
    expect(b.constant).toBe(111);

    n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'static int counter;', 'static int counter;\nstatic int seen;');
    edit(path.join(dir, 'diff.c'), 'counter += 3;', 'counter += 3;\n  seen++;\n  return counter + 1000000 * seen;');
    e = await w.event('patched', n);
    const s1 = Math.floor((await values()).count / 1000000);
    expect(s1).toBeGreaterThanOrEqual(1);
    n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'counter += 3;', 'counter += 4;');
    e = await w.event('patched', n);
    const [c, d] = await pair();
    expect(Math.floor(c.count / 1000000)).toBeGreaterThan(s1); // `seen` lives on in the earlier patch
    expect(d.count - c.count).toBe(4 + 1000000);
    t.expectHealthy();
  });

  test('a failed build is reported and the process runs on; a refused change names its symbol; Ctrl-C leaves the patches in and says how to revert', async () => {
    let n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K +;');
    const f = await w.event('build-failed', n);
    expect(f.output).toMatch(/error: expected expression/);
    expect((await values()).constant).toBe(11);

    n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'return x + K +;', 'return x + K + 7;');
    await w.event('patched', n);
    expect((await values()).constant).toBe(18);

    n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'int a, b;', 'int a, b, c;');
    const r = await w.event('refused', n);
    expect(r.error.code).toBe('UNPATCHABLE');
    expect(r.error.details[0]).toMatch(/^conf@diff\.c: its size changed from 8 to 12 bytes/);
    expect((await values()).constant).toBe(18);
    t.expectHealthy();
    // Undo the struct change: the build is the one the process runs again; nothing to apply.
    n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'int a, b, c;', 'int a, b;');
    await w.event('no-change', n);

    // Stop: the human output says how to undo.
    expect(await w.stop()).toBe(0);
    const st = await hotload(['status', String(t.pid), '--json']);
    expect(st.one.patches).toHaveLength(1);
    const again = spawn(process.execPath, [BIN, 'watch', '--pid', String(t.pid), 'diff.c'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    again.stdout!.on('data', (d) => (out += d));
    const until = async (re: RegExp) => {
      for (let i = 0; i < 1000 && !re.test(out); i++) await sleep(20);
      expect(out).toMatch(re);
    };
    await until(/watching .*diff\.c for process \d+/);
    edit(path.join(dir, 'diff.c'), 'return x + K + 7;', 'return x + K + 8;');
    await until(/patched constant in [\d.]+ m?s \(compile diff\.o [\d.]+ m?s, patch/); // the saved file compiled on its own, no make
    again.kill('SIGINT');
    const code = await new Promise((r) => again.once('exit', r));
    for (const f of fs.readdirSync(os.tmpdir()).filter((x) => x.startsWith(`hotload-watch-${t.pid}-`))) removeAtEnd(path.join(os.tmpdir(), f)); // its snapshot (the human output does not name it)
    expect(code).toBe(0);
    expect(out).toMatch(new RegExp(`process ${t.pid} keeps 1 patch \\(constant\\); undo with: hotload revert ${t.pid} --all`));
    expect((await values()).constant).toBe(19);
  });

  test('a save that changes no code (touch, a comment) applies nothing and says so', async () => {
    let n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
    await w.event('patched', n);
    for (const save of ['touch', 'comment', 'touch']) {
      n = w.events.length;
      if (save === 'touch') {
        const now = new Date();
        fs.utimesSync(path.join(dir, 'diff.c'), now, now);
      } else edit(path.join(dir, 'diff.c'), 'return x + K + 100;', 'return x + K + 100; /* a comment */');
      await w.event('no-change', n);
    }
    const st = await hotload(['status', String(t.pid), '--json']);
    expect(st.one.patches).toHaveLength(1); // before: one more identical patch per save
    expect((await values()).constant).toBe(111);
  });

  test("make's command from the last save is taken while make is asked again; after a Makefile edit, the object is compiled again with make's new command", async () => {
    let n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
    expect((await w.event('patched', n)).compiled).toEqual(['diff.o']);
    expect((await values()).constant).toBe(111);
    // New flags, and a dry run slower than the save takes to settle: the
    // compile starts with the last save's command before make answers.
    edit(path.join(dir, 'Makefile'), 'CFLAGS = ', 'SLOW := $(shell sleep 0.5)\nCFLAGS = -DK=50 ');
    n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'return x + K + 100;', 'return x + K + 200;');
    const e = await w.event('patched', n);
    expect(e.compiled).toEqual(['diff.o']);
    expect((await values()).constant).toBe(251); // 211: compiled with the old flags only
  });

  test('a save made while a build runs is built next, not lost', async () => {
    await w.stop();
    // The build compiles first and then takes a second (a slow link step):
    // a save in that second is newer than what was compiled.
    const w2 = new Watch(dir, ['--pid', String(t.pid), '--build', 'make -s && sleep 1', 'diff.c']);
    cleanup.push(() => w2.stop());
    await w2.event('ready', 0, 10000);
    const n = w2.events.length;
    fs.writeFileSync(path.join(dir, 'diff.c'), fs.readFileSync(path.join(dir, 'diff.c'), 'utf8').replace('return x + K;', 'return x + K + 100;'));
    await w2.event('change', n);
    await sleep(400); // make is done; the build sleeps
    fs.writeFileSync(path.join(dir, 'diff.c'), fs.readFileSync(path.join(dir, 'diff.c'), 'utf8').replace('return x + K + 100;', 'return x + K + 200;')); // in place
    const first = await w2.event('patched', n);
    expect(first.changed).toEqual(['constant']);
    const second = await w2.event('patched', w2.events.indexOf(first) + 1, 10000);
    expect(second.changed).toEqual(['constant']);
    expect((await values()).constant).toBe(211);
  });

  test('an edit of the loop that never returns is patched, and said to be running (its old code goes on)', async () => {
    const n = w.events.length;
    edit(path.join(dir, 'diff.c'), 'printf("constant=%d say=%d', 'printf("constant=%d  say=%d');
    const e = await w.event('patched', n);
    expect(e.active).toEqual([expect.objectContaining({ pid: t.pid, function: e.changed[0], thread: t.pid })]);
    expect(await values()).toHaveProperty('constant', 11); // still the old text: the loop never returns
    expect(t.lines.slice(-3).every((l) => !l.includes('constant=11  say'))).toBe(true);
  });

  test('the process exiting ends watch with exit 5', async () => {
    await t.stop();
    const code = await new Promise((r) => w.child.once('exit', r));
    expect(code).toBe(5);
    expect(w.events.map((e) => e.event)).toContain('exited');
  });
});

test('--follow: a change that needs a restart is refused; the program is restarted; watch takes the new process and its build, and patches it on the next save', async () => {
  const { dir, t, w } = await watchedFixture('hotload-watch-follow-', { watchArgs: ['--follow'] });
  let n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'int a, b;', 'int a, b, c;'); // a struct grows: refused
  expect((await w.event('refused', n)).error.code).toBe('UNPATCHABLE');
  n = w.events.length;
  await t.stop();
  expect((await w.event('exited', n)).pid).toBe(t.pid);
  expect((await w.event('waiting', n)).exe).toBe(path.join(dir, 'diff'));
  const t2 = Target.start(path.join(dir, 'diff'), ['loop']); // the build with the bigger struct
  cleanup.push(() => t2.stop());
  const ready = await w.event('ready', n, 10000);
  expect(ready.pids).toEqual([t2.pid]);
  expect(ready.warnings).toEqual([]);
  await t2.waitFor(/^constant=11 /);
  n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
  const e = await w.event('patched', n);
  expect(e.pids).toEqual([t2.pid]);
  expect(e.replaced).toEqual(['constant']); // against the new build: the struct is no change any more
  await t2.next(/^constant=111 /);
  t2.expectHealthy();
  expect(await w.stop()).toBe(0);
});

test('several processes of one build are patched on each save; one running another build is left out with a warning', async () => {
  const dir = fixtureBuild('hotload-watch-many-');
  const ts = [0, 1].map(() => Target.start(path.join(dir, 'diff'), ['loop']));
  const other = Target.start(path.join(ROOT, 'fixtures/build/diff/CONST/diff'), ['loop']);
  for (const t of [...ts, other]) cleanup.push(() => t.stop());
  for (const t of [...ts, other]) await t.waitFor(/^constant=/);
  const w = new Watch(dir, ['--pid', [...ts, other].map((t) => t.pid).join(','), 'diff.c']);
  cleanup.push(() => w.stop());
  const ready = await w.event('ready', 0, 10000);
  expect(ready.pids).toEqual(ts.map((t) => t.pid));
  expect(ready.warnings.join('\n')).toMatch(new RegExp(`process ${other.pid} runs another build`));
  const n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 50;');
  const e = await w.event('patched', n);
  expect(e.pids).toEqual(ts.map((t) => t.pid));
  expect(e.failed).toEqual([]);
  for (const t of ts) await t.next(/^constant=61 /);
  await other.next(/^constant=12 /); // untouched
  for (const t of [...ts, other]) t.expectHealthy();
});

test('objects built without -ffunction-sections: watch warns at start, and a change is refused with the flags to use', async () => {
  const { dir, t, w, ready } = await watchedFixture('hotload-watch-nosec-', { cflags: '-O2 -g -fpatchable-function-entry=16,14' });
  expect(ready.warnings.join('\n')).toMatch(/built without -ffunction-sections \(diff\.o\)/);
  const n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'counter += 1;', 'counter += 2;');
  const r = await w.event('refused', n);
  expect(r.error.code).toBe('REBUILD_UNSUPPORTED');
  expect(r.error.details.join('\n')).toMatch(/-ffunction-sections/);
  t.expectHealthy();
});

test('objects built without -g: a save is refused, saying to build with -g, and watch goes on', async () => {
  const { dir, t, w } = await watchedFixture('hotload-watch-nog-', { cflags: '-O2 -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections' });
  let n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'counter += 1;', 'counter += 2;');
  const r = await w.event('refused', n);
  expect(r.error.code).toBe('REBUILD_UNSUPPORTED');
  expect(r.error.message).toMatch(/built without -g/);
  n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'counter += 2;', 'counter += 3;');
  expect((await w.event('refused', n)).error.code).toBe('REBUILD_UNSUPPORTED'); // still watching
  t.expectHealthy();
});

test('the real program: Lua 5.4 running a workload; edit math_abs in lmathlib.c, save, and the interpreter runs the new code with its state intact', async () => {
  const dir = tmpdir('hotload-lua-');
  const lua = execFileSync(path.join(ROOT, 'scripts/lua-workdir.sh'), [dir], { encoding: 'utf8' }).trim().split('\n').pop()!;
  const { t, w, line: before } = await watchProgram(dir, lua, [path.join(ROOT, 'tests/lua/workload.lua')], /^tick (\d+) abs 5 total (\d+)$/, ['--build', 'make -s lua', 'lmathlib.c'], 20000);
  const n = w.events.length;
  edit(path.join(dir, 'lmathlib.c'), /(static int math_abs [^]*?)lua_pushinteger\(L, n\);/, '$1lua_pushinteger(L, n + 1000);');
  const e = await w.event('patched', n);
  expect(e.changed).toEqual(['math_abs@lmathlib.c']);
  expect(e.compiled).toEqual(['lmathlib.o']); // make's own command for that object, nothing else
  const after = await t.next(/^tick (\d+) abs 1005 total (\d+)$/);
  const [, t0, s0] = /tick (\d+) abs 5 total (\d+)/.exec(before)!.map(Number);
  const [, t1, s1] = /tick (\d+) abs 1005 total (\d+)/.exec(after)!.map(Number);
  expect(t1).toBeGreaterThan(t0); // the script's tick counter carried on
  expect(s1).toBeGreaterThan(s0 + 1005); // and its total
  t.expectHealthy();
  // Edit it back: the original code runs again.
  const m = w.events.length;
  edit(path.join(dir, 'lmathlib.c'), 'lua_pushinteger(L, n + 1000);', 'lua_pushinteger(L, n);');
  await w.event('patched', m);
  await t.next(/^tick \d+ abs 5 total/);
  t.expectHealthy();
});

test('the second real program: memcached serving clients; edit the version command in proto_text.c, save, and the server answers with the new text, its items intact', async () => {
  const dir = tmpdir('hotload-mc-watch-');
  execFileSync('cp', ['-a', `${memcachedBuilds().o2}/.`, dir]); // an editable copy of the -O2 build, stamps kept
  const { t, sock } = await startMemcached(path.join(dir, 'memcached'));
  cleanup.push(() => t.stop());
  const c = await Client.connect(sock);
  cleanup.push(async () => c.close());
  expect(await c.set('kept', 'from-before')).toBe('STORED\r\n');
  expect(await c.cmd('version\r\n')).toMatch(/^VERSION 1\.6\.\d+\r\n$/);
  const w = new Watch(dir, ['--pid', String(t.pid), '--build', 'make -s memcached', 'proto_text.c']);
  cleanup.push(() => w.stop());
  expect((await w.event('ready', 0, 20000)).warnings).toEqual([]);
  const n = w.events.length;
  edit(path.join(dir, 'proto_text.c'), 'out_string(c, "VERSION " VERSION);', 'out_string(c, "VERSION " VERSION "-live");');
  const e = await w.event('patched', n, 60000);
  expect(e.changed).toEqual(['process_command_ascii']); // the static version handler is inlined there
  expect(e.compiled).toEqual(['memcached-proto_text.o']); // automake's compile line, asked of make
  expect(await c.cmd('version\r\n')).toMatch(/^VERSION 1\.6\.\d+-live\r\n$/);
  expect(await c.get('kept')).toBe('from-before');
  t.expectHealthy();
});

/**
 * An editable copy of memcached's -O2 build, running and served, whose
 * compiles and links the test can hold: the Makefile's compiler is a wrapper
 * that, when the test has left the file `hold` (or `holdlink`), compiles (or
 * not yet links), leaves `read` (or `linking`), and waits for the test's `go`;
 * a held compile writes its object's time only then. So a save can land at a
 * known point of the previous save's build: after the compiler read the
 * source, before its object is written (as on a slow build, where that
 * window is seconds long), or while the program is relinked.
 */
async function heldMemcached(prefix: string) {
  const dir = tmpdir(prefix);
  execFileSync('cp', ['-a', `${memcachedBuilds().o2}/.`, dir]); // stamps kept
  const at = (f: string) => path.join(dir, f);
  fs.writeFileSync(
    at('cc-hold.sh'),
    [
      'out=; prev=; compile=',
      'for a; do [ "$prev" = -o ] && out=$a; [ "$a" = -c ] && compile=1; prev=$a; done',
      `if [ -z "$compile" ] && [ -e ${at('holdlink')} ]; then rm -f ${at('holdlink')}; : > ${at('linking')}; while [ ! -e ${at('go')} ]; do sleep 0.01; done; rm -f ${at('go')}; fi`,
      'gcc "$@" || exit',
      `[ -n "$compile" ] && [ -e ${at('hold')} ] || exit 0`,
      `rm -f ${at('hold')}; : > ${at('read')}`,
      `while [ ! -e ${at('go')} ]; do sleep 0.01; done; rm -f ${at('go')}`,
      'touch "$out"',
      '',
    ].join('\n'),
  );
  edit(at('Makefile'), /^CC = gcc$/m, `CC = sh ${at('cc-hold.sh')}`);
  const { t, sock } = await startMemcached(at('memcached'));
  cleanup.push(() => t.stop());
  const c = await Client.connect(sock);
  cleanup.push(async () => c.close());
  /** The test's side of the wrapper: wait until the held compile (`read`) or link (`linking`) is there. */
  const reached = async (flag: 'read' | 'linking') => {
    for (let i = 0; i < 3000 && !fs.existsSync(at(flag)); i++) await sleep(10);
    if (!fs.existsSync(at(flag))) throw new Error(`the build never reached the held ${flag === 'read' ? 'compile' : 'link'}`);
    fs.rmSync(at(flag));
  };
  const hold = (what: 'hold' | 'holdlink') => fs.writeFileSync(at(what), '');
  const go = () => fs.writeFileSync(at('go'), '');
  /** Save the version reply as `tag`: in place, or as editors do (the new text in a temporary file beside it, renamed over it). */
  let reply = '"VERSION " VERSION';
  const save = (tag: string, how: 'in place' | 'by rename') => {
    const text = fs.readFileSync(at('proto_text.c'), 'utf8');
    const next = text.replace(`out_string(c, ${reply});`, `out_string(c, "VERSION " VERSION "-${tag}");`);
    if (next === text) throw new Error(`proto_text.c: ${reply} not found`);
    reply = `"VERSION " VERSION "-${tag}"`;
    if (how === 'in place') fs.writeFileSync(at('proto_text.c'), next);
    else {
      fs.writeFileSync(at('.proto_text.c.new'), next);
      fs.renameSync(at('.proto_text.c.new'), at('proto_text.c'));
    }
  };
  const version = async () => /^VERSION 1\.6\.\d+(\S*)\r\n$/.exec(await c.cmd('version\r\n'))?.[1];
  return { dir, t, c, reached, hold, go, save, version };
}

describe('saves that come while the previous save is still being built, on memcached', () => {
  test.each(['by rename', 'in place'] as const)(
    'the build command (--no-compile): a save %s after make compiled the previous save\'s text and before it wrote the object is built and patched, not called no change',
    async (how) => {
      const m = await heldMemcached('hotload-watch-held-');
      expect(await m.c.set('kept', 'from-before')).toBe('STORED\r\n');
      const w = new Watch(m.dir, ['--pid', String(m.t.pid), '--no-compile', '--build', 'make -s memcached', 'proto_text.c']);
      cleanup.push(() => w.stop());
      await w.event('ready', 0, 20000);
      const n = w.events.length;
      m.hold('hold');
      m.save('one', 'in place');
      await m.reached('read'); // make's compile of proto_text.c has read the text with -one
      m.save('two', how);
      m.go(); // its object, of -one, is written after -two was saved
      const first = await w.event('patched', n);
      expect(first.compiled).toBeUndefined(); // the build command ran
      // Before: make took that object for newer than the save and compiled nothing: 'no code changed', and -one stayed.
      const second = await w.event('patched', w.events.indexOf(first) + 1);
      expect(second.changed).toEqual(['process_command_ascii']);
      expect(await m.version()).toBe('-two');
      expect(await m.c.get('kept')).toBe('from-before');
      m.t.expectHealthy();
    },
  );

  test('compiled directly: three saves in a row, each while the previous one is compiled (by rename, in place), then one while the program is relinked: each is patched in, the last one runs', async () => {
    const m = await heldMemcached('hotload-watch-held-');
    const w = new Watch(m.dir, ['--pid', String(m.t.pid), '--build', 'make -s memcached', 'proto_text.c']);
    cleanup.push(() => w.stop());
    await w.event('ready', 0, 20000);
    const patched = async (tag: string) => {
      const e = await w.event('patched', n);
      n = w.events.indexOf(e) + 1;
      expect(e.compiled).toEqual(['memcached-proto_text.o']);
      expect(await m.version()).toBe(tag);
    };
    let n = w.events.length;
    m.hold('hold');
    m.save('one', 'in place');
    await m.reached('read'); // -one's compile has read the source
    m.hold('hold'); // and the next compile
    m.save('two', 'by rename');
    m.go(); // -one's object is written after -two was saved
    await patched('-one');
    await m.reached('read'); // -two's compile (after the relink that followed -one)
    m.hold('hold');
    m.save('three', 'in place');
    m.go();
    await patched('-two');
    // Before: proto_text.c, changed during two compiles in a row, was taken for a generated file: -three was never compiled (this compile never came).
    await m.reached('read');
    m.hold('holdlink'); // the relink that follows -three
    m.go();
    await patched('-three');
    await m.reached('linking');
    m.save('four', 'by rename');
    m.go();
    await patched('-four');
    m.t.expectHealthy();
  });
});

test('compile_commands.json: a saved source is compiled with its entry\'s command (the build command is never run); a saved header, in every object whose dependency file lists it; the program is relinked after', async () => {
  const dir = tmpdir('hotload-watch-ccdb-');
  const flags = '-O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections';
  fs.copyFileSync(path.join(ROOT, 'fixtures/src/diff.c'), path.join(dir, 'diff.c'));
  fs.writeFileSync(path.join(dir, 'k.h'), '#define KPLUS 0\n');
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + KPLUS;');
  edit(path.join(dir, 'diff.c'), '#include <unistd.h>', '#include <unistd.h>\n#include "k.h"');
  const cmd = `cc ${flags} -MD -c diff.c -o obj/diff.o`;
  fs.mkdirSync(path.join(dir, 'obj'));
  fs.writeFileSync(path.join(dir, 'compile_commands.json'), JSON.stringify([{ directory: dir, file: 'diff.c', command: cmd }]));
  // The build command: relinks, and leaves a mark each time it runs.
  fs.writeFileSync(path.join(dir, 'relink.sh'), 'echo ran >> relinks.log && cc obj/diff.o -o diff\n');
  execFileSync('sh', ['-c', `${cmd} && sh relink.sh && rm relinks.log`], { cwd: dir });
  const { t, w } = await watchProgram(dir, path.join(dir, 'diff'), ['loop'], /^constant=11 /, ['--objects', 'obj', '--build', 'sh relink.sh', 'diff.c', 'k.h']);
  let n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'return x + K + KPLUS;', 'return x + K + KPLUS + 100;');
  let e = await w.event('patched', n);
  expect(e.compiled).toEqual(['diff.o']);
  await t.next(/^constant=111 /);
  n = w.events.length;
  edit(path.join(dir, 'k.h'), '#define KPLUS 0', '#define KPLUS 5');
  e = await w.event('patched', n);
  expect(e.compiled).toEqual(['diff.o']); // obj/diff.d lists k.h
  expect(e.changed).toEqual(['constant']);
  await t.next(/^constant=116 /);
  t.expectHealthy();
  // The compiles never ran the build command; it relinked after each save, off the critical path.
  expect(await w.stop()).toBe(0);
  expect(fs.readFileSync(path.join(dir, 'relinks.log'), 'utf8')).toBe('ran\nran\n');
  const fresh = Target.start(path.join(dir, 'diff'), ['loop']); // the program on disk has both changes
  cleanup.push(() => fresh.stop());
  await fresh.waitFor(/^constant=116 /);
});

test('Ctrl-C at the terminal while the program is relinked after a save: the relink finishes, and the program on disk has the change', async () => {
  const dir = fixtureBuild('hotload-watch-ctrlc-');
  const t = Target.start(path.join(dir, 'diff'), ['loop']);
  cleanup.push(() => t.stop());
  await t.waitFor(/^constant=11 /);
  // A slow link: the build command (make) relinks after each direct compile.
  edit(path.join(dir, 'Makefile'), '\t$(CC) diff.o -o diff', '\tsleep 0.6\n\t$(CC) diff.o -o diff');
  const w = new Watch(dir, ['--pid', String(t.pid), 'diff.c'], { group: true });
  cleanup.push(() => w.stop());
  await w.event('ready', 0, 10000);
  const n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
  expect((await w.event('patched', n)).compiled).toEqual(['diff.o']);
  await sleep(150); // the relink has started: its sleep runs
  expect(await w.interruptGroup()).toBe(0);
  // The terminal's SIGINT reached the whole job; the relink was not part of it.
  const fresh = Target.start(path.join(dir, 'diff'), ['loop']);
  cleanup.push(() => fresh.stop());
  expect(await fresh.waitFor(/^constant=/)).toMatch(/^constant=111 /); // 11: the relink was killed and the program left as it was
});

test('two sources saved together (an editor\'s "save all", a few ms apart): both are compiled and patched in', async () => {
  const dir = tmpdir('hotload-watch-saveall-');
  const flags = '-O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections';
  const part = (name: string, value: number) => fs.writeFileSync(path.join(dir, `${name}.c`), `__attribute__((noinline)) int ${name}(void) { return ${value}; }\n`);
  part('a', 1);
  part('b', 10);
  fs.writeFileSync(path.join(dir, 'main.c'), '#include <stdio.h>\n#include <unistd.h>\nint a(void);\nint b(void);\nint main(void) {\n  for (;;) {\n    printf("value=%d\\n", a() + b());\n    fflush(stdout);\n    usleep(20000);\n  }\n}\n');
  const db = ['a', 'b', 'main'].map((n) => ({ directory: dir, file: `${n}.c`, command: `cc ${flags} -c ${n}.c -o ${n}.o` }));
  fs.writeFileSync(path.join(dir, 'compile_commands.json'), JSON.stringify(db));
  const link = 'cc a.o b.o main.o -o prog';
  execFileSync('sh', ['-c', `${db.map((d) => d.command).join(' && ')} && ${link}`], { cwd: dir });
  const { t, w } = await watchProgram(dir, path.join(dir, 'prog'), [], /^value=11$/, ['--build', link, 'a.c', 'b.c']);
  const n = w.events.length;
  part('a', 2);
  await sleep(5); // the second file is written while the first one's save settles
  part('b', 20);
  await t.next(/^value=22$/); // 12: b.c's save was taken for seen and never compiled
  // The process runs the patch before watch's event about it is out: wait for the event.
  const compiled = () => w.events.slice(n).flatMap((e) => (e.event === 'patched' ? (e.compiled as string[]) : []));
  await until(() => (compiled().includes('a.o') && compiled().includes('b.o') ? true : undefined), `patched events naming a.o and b.o (so far: ${JSON.stringify(compiled())})`);
  t.expectHealthy();
});

test('a source file the build makes and removes again (a compiler probe in the Makefile, as redis has) is no save: the build command does not run for it', async () => {
  const dir = fixtureBuild('hotload-watch-probe-');
  // On every make run but make's dry runs (which name an object), probe.c lives for half a second beside the sources.
  edit(path.join(dir, 'Makefile'), /^/, "PROBE := $(if $(MAKECMDGOALS),,$(shell echo 'int probe;' > probe.c; sleep 0.5; rm -f probe.c))\n");
  const { t, w } = await watchProgram(dir, path.join(dir, 'diff'), ['loop'], /^constant=/, ['--build', 'make -s && echo ran >> builds.log', '.']);
  const n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
  const e = await w.event('patched', n);
  expect(e.compiled).toEqual(['diff.o']);
  await t.next(/^constant=111 /);
  // The relink after it makes probe.c: seen, and gone by the time it would be built.
  const probe = await w.event('change', w.events.indexOf(e) + 1);
  expect(probe.files).toEqual(['probe.c']);
  expect((await w.event('no-change', w.events.indexOf(probe) + 1)).compiled).toBeUndefined();
  expect(fs.readFileSync(path.join(dir, 'builds.log'), 'utf8')).toBe('ran\n'); // the relink only; before, the build command ran for probe.c too ('probe.c was removed')
  t.expectHealthy();
});

test('--no-compile, and a saved file no object is known to use: the build command runs', async () => {
  const { dir, t, w } = await watchedFixture('hotload-watch-nocompile-', { watchArgs: ['--no-compile'] });
  fs.writeFileSync(path.join(dir, 'notes.h'), '/* not included anywhere */\n'); // not watched (diff.c is) until w2
  let n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
  let e = await w.event('patched', n);
  expect(e.compiled).toBeUndefined();
  await w.stop();
  const w2 = new Watch(dir, ['--pid', String(t.pid), '.']);
  cleanup.push(() => w2.stop());
  await w2.event('ready', 0, 10000);
  n = w2.events.length;
  fs.appendFileSync(path.join(dir, 'notes.h'), '/* more */\n');
  e = await w2.event('no-change', n);
  expect(e.compiled).toBeUndefined(); // make ran: nothing to compile that hotload could name
});

test('a tree of several modules: watching the module the program dlopened patches its edits; an edit of the program\'s own files is said not to be that module\'s, not passed over in silence', async () => {
  const dir = tmpdir('hotload-watch-tree-');
  writeModuleTree(dir, 1, 2);
  fs.writeFileSync(path.join(dir, 'Makefile'), 'CFLAGS = -O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections -fPIC\nall: app/prog mod/mod.so\napp/prog: app/main.o app/util.o\n\t$(CC) app/main.o app/util.o -o app/prog -ldl\nmod/mod.so: mod/mod.o\n\t$(CC) -shared mod/mod.o -o mod/mod.so\n%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n');
  execFileSync('make', ['-s'], { cwd: dir, env: { ...process.env, MAKEFLAGS: '', MAKELEVEL: '' } });
  const { t, w } = await watchProgram(dir, path.join(dir, 'app/prog'), [path.join(dir, 'mod/mod.so')], /^app 1 mod 2$/, ['--target', path.join(dir, 'mod/mod.so'), 'app', 'mod']);

  let n = w.events.length;
  edit(path.join(dir, 'mod/mod.c'), 'return 2;', 'return 20;');
  const e = await w.event('patched', n);
  expect(e.changed).toEqual(['mod_value']);
  expect(e.compiled).toEqual(['mod/mod.o']);
  await t.next(/^app 1 mod 20$/);

  n = w.events.length;
  edit(path.join(dir, 'app/util.c'), 'return 1;', 'return 10;');
  const other = await w.event('no-change', n);
  expect(other.otherModules).toEqual(['app/util.o']);
  await sleep(100);
  expect((await t.fresh(/^app /))[0]).toBe('app 1 mod 20'); // the program's code is not the watched module's
  t.expectHealthy();
});

test('bad input: no such process, no such path to watch: a clear error, nothing started', async () => {
  const dir = tmpdir();
  const r = await new Promise<{ code: number; out: string }>((resolve) => {
    const c = spawn(process.execPath, [BIN, 'watch', '--pid', '4194000', '--json'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout!.on('data', (d) => (out += d));
    c.on('exit', (code) => resolve({ code: code ?? -1, out }));
  });
  expect(r.code).toBe(5);
  expect(JSON.parse(r.out).error.code).toBe('PID_NOT_FOUND');
  const t = Target.start(path.join(ROOT, 'fixtures/build/diff/base/diff'), ['loop']);
  cleanup.push(() => t.stop());
  // Snapshots of earlier tests' watches may remain, and a pid may be reused: only one made by this run counts.
  const snapshots = () => fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith(`hotload-watch-${t.pid}-`));
  const before = snapshots();
  const r2 = await hotload(['watch', '--pid', String(t.pid), path.join(dir, 'missing.c'), '--json']);
  expect(r2.code).toBe(3);
  expect(r2.json.error.code).toBe('FILE_NOT_FOUND');
  expect(snapshots()).toEqual(before);
  t.expectHealthy();
});

test('watch refuses objects that are not the build the process runs (rebuilt after it started), naming the function, before ready (started again on a patched process, it accepts the patched functions: see the Ctrl-C test above)', async () => {
  const dir = fixtureBuild('hotload-watch-stale-');
  const t = Target.start(path.join(dir, 'diff'), ['loop']);
  cleanup.push(() => t.stop());
  await t.waitFor(/^constant=/);
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 5;');
  execFileSync('make', ['-s'], { cwd: dir }); // the objects (and the program on disk) of another build now
  const r = await hotload(['watch', '--pid', String(t.pid), 'diff.c', '--json'], {}, { cwd: dir });
  expect(r.code).toBe(6);
  expect(r.json.error.code).toBe('PATCH_BUILD_MISMATCH');
  expect(r.json.error.details[0]).toMatch(/^diff\.o: constant: /);
  expect(fs.readdirSync(os.tmpdir()).filter((x) => x.startsWith(`hotload-watch-${t.pid}-`))).toEqual([]); // its copy of the build removed
  expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
});
