// Staged copies are cleaned when no process maps them any more, and not
// before they are a few minutes old.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { cleanStaged } from './stage-patch';

test('removes old copies nothing maps; keeps young ones and those a process maps', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-stage-test-'));
  const old = new Date(Date.now() - 3600e3);
  const mk = (name: string, from?: string) => {
    const p = path.join(dir, name);
    if (from) fs.copyFileSync(from, p);
    else fs.writeFileSync(p, 'x');
    fs.chmodSync(p, 0o755);
    return p;
  };
  const gone = mk('0000000000000001-old.so');
  const young = mk('0000000000000002-young.so');
  const inUse = mk('0000000000000003-sleep', '/bin/sleep');
  for (const p of [gone, inUse]) fs.utimesSync(p, old, old);
  const child = spawn(inUse, ['30'], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 100 && !fs.readFileSync(`/proc/${child.pid}/maps`, 'utf8').includes(inUse); i++) await new Promise((r) => setTimeout(r, 10));
    expect(cleanStaged(dir, true)).toBe(1);
    expect(fs.existsSync(gone)).toBe(false);
    expect(fs.existsSync(young)).toBe(true);
    expect(fs.existsSync(inUse)).toBe(true);
  } finally {
    child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('never cleans while another hotload stages (it holds the staging lock until its copy is mapped); cleans once it lets go', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-stage-test-'));
  try {
    const p = path.join(dir, '0000000000000004-reused.so');
    fs.writeFileSync(p, 'x');
    const old = new Date(Date.now() - 3600e3);
    fs.utimesSync(p, old, old);
    // Another stager: a process holding the shared lock on the directory, as stagePatch does.
    const holder = spawn('flock', ['-s', '-o', dir, '-c', 'echo held; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
    try {
      expect(cleanStaged(dir, true)).toBe(0);
      expect(fs.existsSync(p)).toBe(true);
    } finally {
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('exit', r));
    }
    expect(cleanStaged(dir, true)).toBe(1);
    expect(fs.existsSync(p)).toBe(false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
