// The helper process that starts watch's programs (spawner.ts): programs run
// from it, not from this process; their status and output come back; a
// program that cannot start, an abort, a helper that dies mid-run and a
// closed helper each still give one answer.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Spawner } from './spawner';

/** The living descendants of `pid`, from /proc/PID/task/TID/children. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  for (const todo = [pid]; todo.length; ) {
    const p = todo.pop()!;
    let tasks: string[] = [];
    try {
      tasks = fs.readdirSync(`/proc/${p}/task`);
    } catch {
      /* gone */
    }
    for (const t of tasks) {
      let kids = '';
      try {
        kids = fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {
        /* gone */
      }
      for (const k of kids.split(' ').filter(Boolean).map(Number)) out.push(k), todo.push(k);
    }
  }
  return out;
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

let s: Spawner;
beforeEach(() => {
  s = new Spawner();
});
afterEach(() => s.close());

test('a program runs from the helper, with its status, its output (both streams) and its directory', async () => {
  expect(s.pid).toBeGreaterThan(0);
  const r = await s.run('sh', ['-c', 'echo out; echo err >&2; echo "$PPID"; pwd; exit 3'], { cwd: '/tmp' });
  expect(r.status).toBe(3);
  const [out, ppid, cwd] = r.stdout.trim().split('\n');
  expect([out, cwd]).toEqual(['out', fs.realpathSync('/tmp')]);
  expect(Number(ppid)).toBe(s.pid); // started by the helper, not by this process
  expect(r.output.split('\n').sort()).toEqual([...r.stdout.split('\n'), 'err'].sort()); // the two streams (their order between them is the pipes')
});

test('several at once, each with its own answer; an environment given is the one the program sees', async () => {
  const runs = [1, 2, 3, 4].map((i) => s.run('sh', ['-c', `sleep 0.0${i}; echo $N; exit ${i}`], { cwd: '/', env: { ...process.env, N: `n${i}` } }));
  expect((await Promise.all(runs)).map((r) => `${r.status}:${r.stdout.trim()}`)).toEqual(['1:n1', '2:n2', '3:n3', '4:n4']);
});

test('a program that does not exist: status null and why', async () => {
  const r = await s.run('/nonexistent/program', [], { cwd: '/' });
  expect(r.status).toBeNull();
  expect(r.error).toMatch(/ENOENT/);
});

test('an abort stops the program', async () => {
  const ac = new AbortController();
  const t = Date.now();
  const run = s.run('sleep', ['30'], { cwd: '/', signal: ac.signal });
  setTimeout(() => ac.abort(), 100);
  expect((await run).status).toBeNull(); // killed by SIGTERM
  expect(Date.now() - t).toBeLessThan(10000);
});

test('an abort stops the program and everything it started: a shell\'s children too (a compiler would go on writing its object)', async () => {
  const marker = path.join(os.tmpdir(), `hotload-spawner-group-${process.pid}.txt`);
  fs.rmSync(marker, { force: true });
  try {
    const ac = new AbortController();
    const run = s.run('sh', ['-c', `(sleep 0.5; echo late > ${marker}) & wait`], { cwd: '/', signal: ac.signal });
    // Abort once the shell's child has started its `sleep` (the helper's grandchild's child), not after a guess.
    for (let i = 0; i < 1000 && !descendants(s.pid!).some((p) => comm(p) === 'sleep'); i++) await new Promise((r) => setTimeout(r, 5));
    expect(descendants(s.pid!).filter((p) => comm(p) === 'sleep')).toHaveLength(1);
    ac.abort();
    expect((await run).status).toBeNull();
    await new Promise((r) => setTimeout(r, 800));
    expect(fs.existsSync(marker)).toBe(false); // the shell's child was stopped with it
  } finally {
    fs.rmSync(marker, { force: true });
  }
});

test('the helper killed while a program runs: once that program has ended (it goes on alone), the run is made again in this process; later runs too', async () => {
  const helper = s.pid!;
  const marks = path.join(os.tmpdir(), `hotload-spawner-${process.pid}.txt`);
  fs.rmSync(marks, { force: true });
  try {
    const run = s.run('sh', ['-c', `echo start >> ${marks}; sleep 0.3; echo end >> ${marks}; echo done "$PPID"`], { cwd: '/' });
    for (let i = 0; i < 500 && !fs.existsSync(marks); i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50)); // the helper's word that it started it (sent before it ran) is read meanwhile
    process.kill(helper, 'SIGKILL');
    const r = await run;
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`done ${process.pid}\n`);
    expect(fs.readFileSync(marks, 'utf8')).toBe('start\nend\nstart\nend\n'); // one after the other, never both at once
  } finally {
    fs.rmSync(marks, { force: true });
  }
  expect(s.pid).toBeUndefined();
  expect((await s.run('true', [], { cwd: '/' })).status).toBe(0);
});

test('a run asked for once the signal is aborted runs to its end, through the helper and here', async () => {
  const ac = new AbortController();
  ac.abort();
  expect((await s.run('sh', ['-c', 'sleep 0.1; echo ran'], { cwd: '/', signal: ac.signal })).stdout).toBe('ran\n');
  s.close();
  expect((await s.run('sh', ['-c', 'sleep 0.1; echo ran'], { cwd: '/', signal: ac.signal })).stdout).toBe('ran\n');
});

test('closed, the helper exits and runs go on in this process', async () => {
  const helper = s.pid!;
  s.close();
  const r = await s.run('sh', ['-c', 'echo "$PPID"'], { cwd: '/' });
  expect(Number(r.stdout)).toBe(process.pid);
  for (let i = 0; i < 50 && fs.existsSync(`/proc/${helper}`) && !/State:\s+Z/.test(fs.readFileSync(`/proc/${helper}/status`, 'utf8')); i++) await new Promise((res) => setTimeout(res, 20));
  expect(fs.existsSync(`/proc/${helper}`) && !/State:\s+Z/.test(fs.readFileSync(`/proc/${helper}/status`, 'utf8'))).toBe(false);
});

test('a program past its time limit is stopped', async () => {
  const t = Date.now();
  const r = await s.run('sleep', ['5'], { cwd: '/', timeoutMs: 100 });
  expect(r.status).toBeNull();
  expect(Date.now() - t).toBeLessThan(3000);
});
