// Processes that do not share hotload's view of the file system or of pids:
// one in its own mount namespace with a private /tmp (systemd's PrivateTmp,
// a container), one in its own pid namespace, one in a chroot. Real
// namespaces (unshare) and a real chroot. On each: attach, status, revert,
// rollout and watch. Before, the process was told to
// open a copy in hotload's /tmp, which it cannot see (PATCH_DLOPEN_FAILED).
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, FIX, ROOT, Target, computePatch, hotload, mkpatch, removeAtEnd, sleep, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');

/** A chroot holding `bin` (as /target) and the libraries it (and a patch) loads, with a /tmp. */
function chrootDir(bin: string): string {
  const dir = tmpdir('hotload-chroot-');
  const copy = (file: string, to = path.join(dir, file)) => {
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(fs.realpathSync(file), to);
  };
  copy(bin, path.join(dir, 'target'));
  for (const line of execFileSync('ldd', [bin], { encoding: 'utf8' }).split('\n')) {
    const m = /(\/\S+) \(0x/.exec(line);
    if (m) copy(m[1]);
  }
  fs.mkdirSync(path.join(dir, 'tmp'), { mode: 0o1777 });
  fs.chmodSync(path.join(dir, 'tmp'), 0o1777);
  return dir;
}

/**
 * `bin args` in its own mount namespace with a tmpfs over /tmp. The program is
 * opened first and run through that descriptor: the checkout itself may lie
 * under /tmp, which the tmpfs hides.
 */
function withPrivateTmp(bin: string, args: string): Target {
  return Target.start('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `exec 3<"${bin}" && mount -t tmpfs none /tmp && exec /proc/self/fd/3 ${args}`]);
}

/** The pid (in our namespace) of the only child of `pid`. */
async function childOf(pid: number): Promise<number> {
  for (let i = 0; i < 200; i++) {
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      const kids = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      if (kids) return Number(kids.split(' ')[0]);
    }
    await sleep(10);
  }
  throw new Error(`process ${pid} has no child`);
}

/** Ways to run `bin loop` apart from hotload's view: the Target, and the program's pid in our namespace. */
const cases: [string, (bin: string) => Promise<{ t: Target; pid: number }>][] = [
  [
    'its own mount namespace with a private /tmp',
    async (bin) => {
      const t = withPrivateTmp(bin, 'loop');
      return { t, pid: t.pid };
    },
  ],
  [
    'its own pid namespace (and /proc)',
    async (bin) => {
      const t = Target.start('unshare', ['-m', '-p', '-f', '--kill-child', '--mount-proc', bin, 'loop']);
      return { t, pid: await childOf(t.pid) };
    },
  ],
  [
    'a chroot',
    async (bin) => {
      const t = Target.start('chroot', [chrootDir(bin), '/target', 'loop']);
      return { t, pid: t.pid };
    },
  ],
];

describe.each(cases)('a process in %s', (_what, startIt) => {
  let t: Target;
  let pid: number;
  beforeAll(async () => {
    ({ t, pid } = await startIt(TARGET));
    await t.waitFor(/^compute 6 /);
  });
  afterAll(() => t.stop());

  test('attach, status, revert: the patch goes in and out; status names it from the process', async () => {
    const p = await mkpatch(computePatch(51), TARGET, 'ns');
    const a = await hotload(['attach', String(pid), p, '--json']);
    expect(a.stderr).toBe('');
    expect(a.code).toBe(0);
    expect(a.one.staged).toMatch(/^\/(tmp|dev\/shm|var\/tmp)\/hotload-\d+\/[0-9a-f]{16}-ns\.so$/); // as the process sees it
    await t.next(/^compute 1056 /);
    // Another TMPDIR changes nothing: what is applied is read from the process.
    const s = await hotload(['status', String(pid), '--json'], { TMPDIR: tmpdir('hotload-other-') });
    expect(s.one.functions.map((f: { name: string }) => f.name)).toEqual(['compute']);
    expect(s.one.patches[0].source).toBe(p);
    const r = await hotload(['revert', String(pid), '--all', '--json'], { TMPDIR: tmpdir('hotload-other-') });
    expect(r.code).toBe(0);
    expect(r.one.reverted.map((x: { name: string }) => x.name)).toEqual(['compute']);
    await t.next(/^compute 6 /);
    t.expectHealthy();
  });

  test('a rollout to it', async () => {
    const p = await mkpatch(computePatch(52), TARGET, 'ns-rollout');
    const dir = tmpdir();
    const plan = path.join(dir, 'plan.json');
    fs.writeFileSync(plan, JSON.stringify({ targets: { pids: [pid] }, steps: [{ apply: p }, { wait: 50 }], healthCheck: 'kill -0 $HOTLOAD_PID' }));
    const r = await hotload(['rollout', plan, '--json']);
    expect(r.code).toBe(0);
    expect(r.json.processes[0]).toMatchObject({ pid, status: 'applied' });
    await t.next(/^compute 1057 /);
    expect((await hotload(['revert', String(pid), '--all'])).code).toBe(0);
    await t.next(/^compute 6 /);
  });
});

describe.each(cases)('watch on a process in %s', (_what, startIt) => {
  test('a save is patched in', async () => {
    const dir = tmpdir('hotload-ns-watch-');
    fs.copyFileSync(path.join(ROOT, 'fixtures/src/diff.c'), path.join(dir, 'diff.c'));
    fs.writeFileSync(path.join(dir, 'Makefile'), 'CFLAGS = -O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections\ndiff: diff.o\n\t$(CC) diff.o -o diff\n');
    execFileSync('make', ['-s'], { cwd: dir });
    const { t, pid } = await startIt(path.join(dir, 'diff'));
    const w = spawn(process.execPath, [BIN, 'watch', '--json', '--pid', String(pid), 'diff.c'], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    w.stdout!.on('data', (d) => (out += d));
    const until = async (re: RegExp) => {
      for (let i = 0; i < 2000 && !re.test(out); i++) await sleep(20);
      expect(out).toMatch(re);
    };
    try {
      await t.waitFor(/^constant=11 /);
      await until(/"event":"ready"/);
      removeAtEnd(JSON.parse(out.split('\n').find((l) => l.includes('"event":"ready"'))!).snapshot);
      fs.writeFileSync(path.join(dir, 'diff.c'), fs.readFileSync(path.join(dir, 'diff.c'), 'utf8').replace('return x + K;', 'return x + K + 100;'));
      await until(/"event":"patched"/);
      await t.next(/^constant=111 /);
      t.expectHealthy();
    } finally {
      w.kill('SIGINT');
      await t.stop();
    }
  });
});

test('a chroot with no /tmp, /dev/shm or /var/tmp: refused as PATCH_NO_STAGING (nothing was loaded, no dlopen tried), the process untouched', async () => {
  const bin = path.join(FIX, 'target');
  const dir = chrootDir(bin);
  fs.rmdirSync(path.join(dir, 'tmp'));
  const t = Target.start('chroot', [dir, '/target', 'loop']);
  try {
    await t.waitFor(/^compute 6 /);
    const p = await mkpatch(computePatch(5), bin, 'nostage');
    const r = await hotload(['attach', String(t.pid), p, '--json']);
    expect(r.code).toBe(6);
    expect(r.one.error.code).toBe('PATCH_NO_STAGING');
    expect(r.one.error.message).toMatch(/has no directory hotload can put the patch in, in its view of the file system/);
    expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
    await t.next(/^compute 6 /);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});
