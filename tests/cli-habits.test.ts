// The command line as people expect one to behave: --version, help <command>,
// a completion script, one target form for attach/revert/status, values that
// start with `-`, progress cleared before results, no colour on a dumb
// terminal, and a rollout --dry-run that says what it did not run.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, FIX, ROOT, Target, computePatch, hotload, mkpatch, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');

/** Run the CLI on a terminal (util-linux `script` gives it a pty); returns what the terminal got. */
function onTerminal(args: string[], env: NodeJS.ProcessEnv = {}): string {
  const cmd = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const r = spawnSync('script', ['-qfec', cmd, '/dev/null'], { encoding: 'utf8', env: { ...process.env, TERM: 'xterm', ...env } });
  return r.stdout;
}

test('--version prints the version of packages/cli/package.json', async () => {
  const r = await hotload(['--version']);
  expect(r.code).toBe(0);
  expect(r.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'packages/cli/package.json'), 'utf8')).version);
});

test('help <command> is <command> --help; help alone is --help', async () => {
  const a = await hotload(['help', 'attach']);
  const b = await hotload(['attach', '--help']);
  expect(a.code).toBe(0);
  expect(a.stdout).toBe(b.stdout);
  expect(a.stdout).toMatch(/Examples:/);
  expect((await hotload(['help'])).stdout).toBe((await hotload(['--help'])).stdout);
});

test('completion prints a bash completion script that completes commands', async () => {
  const r = await hotload(['completion']);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/complete -o bashdefault -o default -F _hotload_yargs_completions hotload/);
  const words = await hotload(['--get-yargs-completions', 'hotload', 'at']);
  expect(words.stdout.split('\n')).toContain('attach');
});

test('status takes a pid, a list or a name; --json: an array of per-process results for each form, even one pid', async () => {
  const t = Target.start(TARGET, ['loop']);
  try {
    await t.waitFor(/^compute 6/);
    const one = await hotload(['status', String(t.pid), '--json']);
    expect(one.json).toEqual([{ pid: t.pid, ok: true, result: expect.objectContaining({ pid: t.pid, functions: [] }) }]);
    const list = await hotload(['status', `${t.pid},${t.pid}`, '--json']);
    expect(list.json).toEqual([expect.objectContaining({ pid: t.pid, ok: true }), expect.objectContaining({ pid: t.pid, ok: true })]);
    const byName = await hotload(['status', 'target', '--json']);
    expect(Array.isArray(byName.json)).toBe(true);
    expect(byName.json.map((x: { pid: number }) => x.pid)).toContain(t.pid);
    const none = await hotload(['status', 'no-such-program-here']);
    expect(none.code).toBe(5);
    expect(none.stderr).toMatch(/no process named no-such-program-here/);
  } finally {
    await t.stop();
  }
});

test('an option value that starts with - works as `--cflags "-I a -DX"` and as `--cflags=...`', async () => {
  const dir = tmpdir();
  fs.mkdirSync(path.join(dir, 'inc'));
  fs.writeFileSync(path.join(dir, 'inc', 'k.h'), '#define K 5\n');
  fs.writeFileSync(path.join(dir, 'p.c'), '#include <hotload.h>\n#include "k.h"\nint compute_v2(int x) { return x + 1000 + K + EXTRA; }\nHOTLOAD_REPLACE(compute, compute_v2);\n');
  for (const form of [['--cflags', `-I ${dir}/inc -DEXTRA=1`], [`--cflags=-I ${dir}/inc -DEXTRA=1`]]) {
    const r = await hotload(['mkpatch', path.join(dir, 'p.c'), '--target', TARGET, '-o', path.join(dir, 'p.so'), ...form]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  }
});

test('on a terminal: the progress line is cleared before the result; TERM=dumb and NO_COLOR: no colour', async () => {
  const p = await mkpatch(computePatch(31), TARGET, 'tty');
  const t = Target.start(TARGET, ['loop']);
  try {
    await t.waitFor(/^compute 6/);
    const out = onTerminal(['attach', String(t.pid), p]);
    expect(out).toMatch(/patched/);
    // Whatever progress was shown, the line is cleared (\r ESC[K) before "patched" is written.
    expect(out).not.toMatch(/[a-z]patched process/);
    if (/redirecting|loading|stopping/.test(out)) expect(out).toMatch(/\r\x1b\[K\x1b\[32mpatched/);
    expect(out).toMatch(/\x1b\[32mpatched\x1b\[0m/); // colour on a terminal
    const err = onTerminal(['status', '0'], { TERM: 'dumb' });
    expect(err).toMatch(/error USAGE/);
    expect(err).not.toMatch(/\x1b\[/);
    expect(onTerminal(['status', '0'])).toMatch(/\x1b\[31merror USAGE/);
    expect(onTerminal(['status', '0'], { NO_COLOR: '1' })).not.toMatch(/\x1b\[/);
  } finally {
    await t.stop();
  }
});

test('rollout --dry-run says it ran no check; the JSON says dryRun', async () => {
  const p = await mkpatch(computePatch(32), TARGET, 'dry');
  const t = Target.start(TARGET, ['loop']);
  try {
    await t.waitFor(/^compute 6/);
    const dir = tmpdir();
    const plan = path.join(dir, 'plan.json');
    fs.writeFileSync(plan, JSON.stringify({ targets: { pids: [t.pid] }, steps: [{ apply: p }], healthCheck: 'exit 1' }));
    const r = await hotload(['rollout', plan, '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/dry run: nothing was applied; no wait and no health check was run/);
    const j = await hotload(['rollout', plan, '--dry-run', '--json']);
    expect(j.json).toMatchObject({ outcome: 'success', dryRun: true });
    const help = await hotload(['rollout', '--help']);
    expect(help.stdout).toMatch(/relative to the plan file's folder, and checks run in that folder/);
    expect(help.stdout).toMatch(/checkTimeoutMs/);
  } finally {
    await t.stop();
  }
});

test('rollout --dry-run checks each patch against each process as attach does, touching none: a patch for another build would fail', async () => {
  const dir = tmpdir();
  const other = path.join(dir, 'target');
  expect(spawnSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-pthread', '-DANOTHER_BUILD=1', path.join(FIX, '../src/target.c'), '-o', other, '-ldl']).status).toBe(0);
  const p = await mkpatch(computePatch(33), other, 'dry-other');
  const t = Target.start(TARGET, ['loop']);
  try {
    await t.waitFor(/^compute 6/);
    const plan = path.join(dir, 'plan.json');
    fs.writeFileSync(plan, JSON.stringify({ targets: { pids: [t.pid] }, steps: [{ apply: p }] }));
    const j = await hotload(['rollout', plan, '--dry-run', '--json']);
    expect(j.code).toBe(12);
    expect(j.json.processes).toEqual([expect.objectContaining({ pid: t.pid, status: 'would-fail', code: 'PATCH_BUILD_MISMATCH' })]);
    // Never stopped or traced, still the old code.
    expect(t.state().tracer).toBe(0);
    await t.next(/^compute 6 /);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});
