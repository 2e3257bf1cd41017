// Output through a pipe arrives whole, with its exit status, even when the
// reader is slower than hotload (a script piping `--json` into a parser that
// starts late). Before, hotload exited before Node had written what the pipe
// could not take yet: 64 KiB of a 650 KB document, and exit status 0.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, ROOT, Target, hotload, tmpdir } from './helpers';

/** Run the CLI with stdout a pipe that nobody reads for the first second. */
function slowPipe(args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'ignore'] });
    const chunks: Buffer[] = [];
    // Listening but paused: the pipe fills and stays full (Node resumes a
    // child's stream nobody listens to when the child exits, dropping it).
    c.stdout.on('data', (d: Buffer) => chunks.push(d));
    c.stdout.pause();
    setTimeout(() => c.stdout.resume(), 1000);
    let code: number | null = null;
    let ended = false;
    const finish = () => {
      if (ended && code !== null) resolve({ code, stdout: Buffer.concat(chunks).toString('utf8') });
    };
    c.on('exit', (x) => {
      code = x ?? -1;
      finish();
    });
    c.stdout.on('end', () => {
      ended = true;
      finish();
    });
  });
}

let dir: string;
let big: string;
let patch: string;
const N = 3000;
beforeAll(async () => {
  dir = tmpdir();
  spawnSync('sh', [path.join(ROOT, 'fixtures/src/gen-many.sh'), String(N), dir]);
  big = path.join(dir, 'target-big');
  const cc = spawnSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-pthread', '-DWITH_MANY', path.join(ROOT, 'fixtures/src/target.c'), path.join(dir, 'many.c'), '-o', big, '-ldl'], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(cc.stderr);
  patch = path.join(dir, 'many.so');
  const r = await hotload(['mkpatch', path.join(dir, 'many-patch.c'), '--target', big, '-o', patch]);
  if (r.code !== 0) throw new Error(r.stderr);
}, 120000);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('index --json of a 3,000-function program: the whole document through a slow pipe', async () => {
  const r = await slowPipe(['index', big, '--json']);
  expect(r.code).toBe(0);
  expect(r.stdout.length).toBeGreaterThan(256 * 1024); // well past a pipe's 64 KiB
  const doc = JSON.parse(r.stdout);
  const whole = await hotload(['index', big, '--json']);
  expect(doc).toEqual(whole.json);
});

test('attach and status --json of a 3,000-function patch: whole through a slow pipe', async () => {
  const t = Target.start(big, ['many']);
  try {
    await t.waitFor(/^compute 6 .* many 0$/);
    const a = await slowPipe(['attach', String(t.pid), patch, '--json']);
    expect(a.code).toBe(0);
    expect(a.stdout.length).toBeGreaterThan(128 * 1024);
    expect(JSON.parse(a.stdout)[0].result.functions).toHaveLength(N);
    const s = await slowPipe(['status', String(t.pid), '--json']);
    expect(s.code).toBe(0);
    expect(s.stdout.length).toBeGreaterThan(128 * 1024);
    const st = JSON.parse(s.stdout);
    expect(JSON.stringify(st)).toContain('f2999');
    await t.next(/^compute 6 .* many 3000$/); // each of the 3,000 calls returns the new value
  } finally {
    await t.stop();
  }
});

test('an error through a slow pipe keeps its exit status and its whole JSON', async () => {
  const r = await slowPipe(['attach', '4194000', patch, '--json']);
  expect(r.code).toBe(5);
  expect(JSON.parse(r.stdout)).toEqual([{ pid: 4194000, ok: false, error: expect.objectContaining({ code: 'PID_NOT_FOUND' }) }]);
});
