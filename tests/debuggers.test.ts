// Patches from a rebuild, seen by the tools developers already use. hotload
// maps such a patch itself (it is not in the loader's list), so attach gives
// debuggers a copy through the GDB JIT interface, with the objects' DWARF and
// unwind tables at their run-time addresses; profilers read the mapped file,
// which carries its symbols, .eh_frame and .eh_frame_hdr. Each test attaches a
// real gdb (or perf) to a real patched process.
import { ChildProcess, execFile, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { FIX, ROOT, Target, hotload, sleep, tmpdir } from './helpers';
import { Client, memcachedBuilds, startMemcached } from './memcached-client';

const D = path.join(FIX, 'diff');
const BASE = path.join(D, 'base/diff');
const SOURCE = fs.readFileSync(path.join(ROOT, 'fixtures/src/diff.c'), 'utf8').split('\n');
const lineOf = (text: string) => SOURCE.findIndex((l) => l.includes(text)) + 1;
const ENV = { ...process.env, DEBUGINFOD_URLS: '' };

const targets: Target[] = [];
afterEach(async () => {
  for (const t of targets.splice(0)) await t.stop();
});

async function patched(variant: string, env: NodeJS.ProcessEnv = {}): Promise<{ t: Target; attach: any; file: string }> {
  const file = path.join(tmpdir(), `${variant.toLowerCase()}.so`);
  const mk = await hotload(['mkpatch', '--from', path.join(D, 'base/diff.o'), '--to', path.join(D, variant, 'diff.o'), '--target', BASE, '-o', file]);
  expect(mk.code).toBe(0);
  const t = Target.start(BASE, ['loop']);
  targets.push(t);
  await t.waitFor(/^constant=/);
  const r = await hotload(['attach', String(t.pid), file, '--json'], env);
  expect(r.code).toBe(0);
  return { t, attach: r.one, file };
}

/** gdb -batch attached to `pid`, running `cmds`; its whole output. */
function gdb(pid: number, cmds: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('gdb', ['-nx', '-batch', '-p', String(pid), ...cmds.flatMap((c) => ['-ex', c])], { env: ENV, timeout: 120000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && !stdout) reject(err);
      else resolve(stdout + stderr);
    });
  });
}

/** gdb started in the background; `output()` so far, `done` when it exits. */
function gdbBackground(pid: number, cmds: string[]): { child: ChildProcess; output: () => string; done: Promise<string> } {
  const child = spawn('gdb', ['-nx', '-batch', '-p', String(pid), ...cmds.flatMap((c) => ['-ex', c])], { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  // The two streams are kept apart and put one after the other, as gdb()
  // does: taken as they arrive, a message on stderr (a source file gdb cannot
  // find) could land inside a line of the backtrace on stdout.
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const done = new Promise<string>((resolve) => child.once('exit', () => resolve(out + err)));
  return { child, output: () => out + err, done };
}

async function until(what: () => boolean, label: string, ms = 60000): Promise<void> {
  for (const end = Date.now() + ms; !what(); await sleep(20)) if (Date.now() > end) throw new Error(`timed out waiting for ${label}`);
}

test('gdb -p shows a running patched function with its file and line, and the frames under it', async () => {
  const { t } = await patched('SLEEPS');
  await t.waitFor(/^sleeping in constant$/); // the new code is running, and stays in its sleep
  const out = await gdb(t.pid, ['bt', 'frame function constant', 'info symbol $pc', 'info source']);
  expect(out).toMatch(new RegExp(`#\\d+ +0x[0-9a-f]+ in constant \\(x=.*\\) at diff\\.c:${lineOf('for (;;) sleep(1000);')}\n`));
  expect(out).toMatch(/#\d+ .*loop \(\) at diff\.c:\d+/); // unwound through the patch into the program
  expect(out).toMatch(/#\d+ .*main \(argc=.*at diff\.c:\d+/);
  expect(out).toMatch(/constant \+ \d+ in section \.text of <in-memory@0x[0-9a-f]+>/); // the copy hotload registered
  expect(out).not.toContain('??');
  t.expectHealthy(); // gdb detached; the process goes on
  const st = await hotload(['status', String(t.pid), '--json']);
  expect(st.one.patches[0]).toEqual(expect.objectContaining({ loadedBy: 'hotload', debuggers: true }));
});

test('a breakpoint on a source line that only the patch has is hit, with the arguments and the callers', async () => {
  const { t, attach } = await patched('NEWHELPER');
  await t.next(/^constant=14 /);
  const line = lineOf('x = extra(x);');
  const out = await gdb(t.pid, [`break diff.c:${line}`, 'continue', 'bt', 'p/x $pc', 'delete']);
  expect(out).toMatch(new RegExp(`Breakpoint 1, constant \\(x=1\\) at diff\\.c:${line}`));
  expect(out).toMatch(/#1 .* in loop \(\) at diff\.c:\d+/);
  // The stop was in the patch's code, not the program's.
  const pc = BigInt(/\$1 = (0x[0-9a-f]+)/.exec(out)![1]);
  const fnNew = BigInt(attach.functions.find((f: { name: string }) => f.name === 'constant').new);
  expect(pc >= fnNew && pc < fnNew + 64n).toBe(true);
  // After the debugger leaves, the program runs the patch as before.
  await t.next(/^constant=14 /);
  t.expectHealthy();
});

test('a second patch of the same program is seen too, each at its own address', async () => {
  const { t } = await patched('NEWHELPER');
  const second = path.join(tmpdir(), 'const.so');
  expect((await hotload(['mkpatch', '--from', path.join(D, 'base/diff.o'), '--to', path.join(D, 'CONST/diff.o'), '--target', BASE, '-o', second])).code).toBe(0);
  const r = await hotload(['attach', String(t.pid), second, '--json']);
  expect(r.code).toBe(0);
  await t.next(/^constant=12 /);
  const out = await gdb(t.pid, ['maint info jit', `info symbol ${r.one.functions[0].new}`]);
  expect(out.match(/^0x[0-9a-f]+ +0x[0-9a-f]+ +\d+ *$/gm)?.length).toBe(2); // two entries in the list
  expect(out).toMatch(/constant in section \.text of <in-memory@0x[0-9a-f]+>/);
  const st = await hotload(['status', String(t.pid), '--json']);
  expect(st.one.patches.map((p: { debuggers: boolean }) => p.debuggers)).toEqual([true, true]);
});

test('without the descriptor library the patch applies all the same, and says debuggers will not see it', async () => {
  const { t, attach } = await patched('CONST', { HOTLOAD_DEBUG_LIBRARY: '/nonexistent/libhotload-debug.so' });
  expect(attach.notes).toEqual([expect.stringMatching(/^debuggers will not see this patch: \/nonexistent\/libhotload-debug\.so is missing/)]);
  await t.next(/^constant=12 /);
  const st = await hotload(['status', String(t.pid), '--json']);
  expect(st.one.patches[0].debuggers).toBe(false);
  const text = await hotload(['status', String(t.pid)]);
  expect(text.stdout).toContain(`not registered with debuggers; in gdb: add-symbol-file ${st.one.patches[0].staged} -o ${st.one.patches[0].bias}`);
  expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8')).not.toContain('libhotload-debug.so');
});

// Without perf this test is skipped, and its name says why; under CI=true it
// always runs (and fails without perf).
const PERF = !!execFileSync('sh', ['-c', 'command -v perf || true'], { encoding: 'utf8' }).trim();
const perfTest = PERF || process.env.CI === 'true' ? test : test.skip;
perfTest(`perf names a patched function by the patch file and unwinds through it to its callers${perfTest === test ? '' : ' [skipped: perf is not installed (Debian: linux-perf)]'}`, async () => {
  const { t, attach } = await patched('SPINS');
  await t.waitFor(/^spinning in constant$/);
  const data = path.join(tmpdir(), 'perf.data');
  execFileSync('perf', ['record', '-q', '-o', data, '--call-graph', 'dwarf', '-p', String(t.pid), '--', 'sleep', '1'], { stdio: 'ignore' });
  const report = execFileSync('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', 'dso,sym'], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
  const dso = path.basename(attach.staged);
  const top = report.split('\n').find((l) => /^\s+\d+\.\d+%/.test(l))!;
  expect(top).toContain(dso);
  expect(top).toMatch(/\[\.\] constant/);
  // The call graph goes from the patch's function on into the program.
  expect(report).toMatch(/---constant\s+loop \(inlined\)\s+main\s/);
});

test('memcached: a breakpoint on a function of the rebuilt server is hit in the patch, with source lines through its callers', async () => {
  const { o2, o1 } = memcachedBuilds();
  const server = path.join(o2, 'memcached');
  const out = path.join(tmpdir(), 'mc-O1.so');
  expect((await hotload(['mkpatch', '--from', o2, '--to', o1, '--target', server, '-o', out])).code).toBe(0);
  const { t, sock } = await startMemcached(server);
  targets.push(t);
  const c = await Client.connect(sock);
  try {
    expect(await c.set('k', 'v1')).toBe('STORED\r\n');
    const r = await hotload(['attach', String(t.pid), out, '--json']);
    expect(r.code).toBe(0);
    // A line of the `get` branch: calls enter through the old entry, which
    // jumps to the patch, so the program's own copy of this line never runs.
    const src = fs.readFileSync(path.join(o2, 'proto_text.c'), 'utf8').split('\n');
    const line = src.findIndex((l) => l.includes('process_get_command(c, tokens, ntokens, false, false);')) + 1;
    expect(line).toBeGreaterThan(0);
    const g = gdbBackground(t.pid, [`break proto_text.c:${line}`, 'continue', 'bt 4', 'info symbol $pc', 'delete']);
    // Once the breakpoint is set the process is stopped (gdb attached): a
    // request sent now waits for `continue`, and then stops in the breakpoint.
    await until(() => /Breakpoint 1 at /.test(g.output()), 'gdb to attach and set the breakpoint');
    const reply = c.get('k');
    const text = await g.done;
    expect(text).toMatch(new RegExp(`hit Breakpoint 1\\.\\d+, process_command_ascii \\(c=(c@entry=)?0x[0-9a-f]+, command=.*\\) at proto_text\\.c:${line}\n`));
    expect(text).toMatch(/#1 .* in try_read_command_ascii \(c=0x[0-9a-f]+\) at proto_text\.c:\d+/);
    expect(text).toMatch(/#2 .* in drive_machine \(.*\) at memcached\.c:\d+/);
    expect(text).toMatch(/process_command_ascii \+ \d+ in section \.text of <in-memory@0x[0-9a-f]+>/); // in the patch
    expect(await reply).toBe('v1');
    t.expectHealthy();
  } finally {
    c.close();
  }
}, 240000);
