// outdateObjects (compile.ts): before watch runs the build command, an object
// written after a save must not pass for current, so make recompiles it if it
// depends on the saved file; objects written before the save are left alone.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { outdateObjects } from './compile';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-outdate-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const at = (f: string) => path.join(dir, f);
const setTime = (f: string, s: number) => fs.utimesSync(at(f), s, s);
const mtime = (f: string) => fs.statSync(at(f)).mtimeMs / 1000;

test('objects written at or after the oldest saved file are dated to just before it; older ones and the sources keep their times', () => {
  for (const f of ['a.c', 'b.c', 'a.o', 'sub/b.o', 'old.o']) {
    fs.mkdirSync(path.dirname(at(f)), { recursive: true });
    fs.writeFileSync(at(f), '');
  }
  setTime('a.c', 1000);
  setTime('b.c', 1010);
  setTime('old.o', 900); // compiled before the save
  setTime('a.o', 1005); // compiled from the text before the save, written after it
  setTime('sub/b.o', 1000); // the same tick as the save
  expect(outdateObjects(dir, [at('b.c'), at('a.c'), at('gone.c')])).toEqual(['a.o', 'sub/b.o']);
  for (const f of ['a.o', 'sub/b.o']) expect(mtime(f)).toBeCloseTo(999.999, 3);
  expect(mtime('old.o')).toBe(900);
  expect(mtime('a.c')).toBe(1000);
  expect(outdateObjects(dir, [at('gone.c')])).toEqual([]); // nothing saved is there: nothing to date
});

test('make then remakes an object it had taken for current', () => {
  fs.writeFileSync(at('Makefile'), 'x.o: x.c\n\tcp x.c x.o\n');
  fs.writeFileSync(at('x.c'), 'new text');
  fs.writeFileSync(at('x.o'), 'old text');
  setTime('x.c', 2000);
  setTime('x.o', 2001); // written after the save, from the text before it
  const env = { ...process.env, MAKEFLAGS: '', MAKELEVEL: '' };
  expect(execFileSync('make', ['-q', 'x.o'], { cwd: dir, env, stdio: 'pipe' }).length).toBe(0); // exit 0: current
  outdateObjects(dir, [at('x.c')]);
  execFileSync('make', ['-s', 'x.o'], { cwd: dir, env });
  expect(fs.readFileSync(at('x.o'), 'utf8')).toBe('new text');
});
