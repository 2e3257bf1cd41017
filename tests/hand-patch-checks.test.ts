// What mkpatch refuses in a hand-written patch before anything is loaded:
// names that would bind to the wrong thing, or that hotload cannot reach.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { hotload, tmpdir } from './helpers';

let dir: string;
let prog: string;
beforeAll(() => {
  dir = tmpdir();
  // A static named like a glibc export (`daylight`), and a thread-local.
  fs.writeFileSync(
    path.join(dir, 'prog.c'),
    '#include <stdio.h>\n#include <unistd.h>\nstatic int daylight = 7;\nstatic __thread int tcount;\n' +
      '__attribute__((noinline)) int value(void) { return daylight++ + tcount++; }\n' +
      'int main(void) { for (;;) { printf("%d\\n", value()); sleep(1); } }\n',
  );
  execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', 'prog.c', '-o', 'prog'], { cwd: dir });
  prog = path.join(dir, 'prog');
});

async function mk(name: string, src: string) {
  fs.writeFileSync(path.join(dir, `${name}.c`), src);
  const out = path.join(dir, `${name}.so`);
  const r = await hotload(['mkpatch', path.join(dir, `${name}.c`), '--target', prog, '-o', out, '--json']);
  return { ...r, written: fs.existsSync(out) };
}

test('a plain extern naming a static of the target is refused, pointing to HOTLOAD_STATIC (it would bind to glibc\'s daylight)', async () => {
  const r = await mk('extern', '#include <hotload.h>\nextern int daylight;\nint value_v2(void) { return daylight + 1000; }\nHOTLOAD_REPLACE(value, value_v2);\n');
  expect(r.json.error.code).toBe('PATCH_UNRESOLVED');
  expect(r.json.error.details).toEqual([expect.stringMatching(/^daylight: a static of .*prog; a plain extern would bind to another module's daylight, if any, not to the target's: use HOTLOAD_STATIC\(type, daylight\)/)]);
  expect(r.written).toBe(false);
  // The way it says works.
  const ok = await mk('static', '#include <hotload.h>\nHOTLOAD_STATIC(int, daylight);\nint value_v2(void) { return HOTLOAD_REF(daylight) + 1000; }\nHOTLOAD_REPLACE(value, value_v2);\n');
  expect(ok.stderr).toBe('');
  expect(ok.code).toBe(0);
});

test('HOTLOAD_STATIC of a thread-local variable says thread-locals are not supported, not "no such symbol"', async () => {
  const r = await mk('tls', '#include <hotload.h>\nHOTLOAD_STATIC(int, tcount);\nint value_v2(void) { return HOTLOAD_REF(tcount); }\nHOTLOAD_REPLACE(value, value_v2);\n');
  expect(r.json.error.code).toBe('PATCH_UNRESOLVED');
  expect(r.json.error.details[0]).toMatch(/^HOTLOAD_STATIC\(tcount\): a thread-local variable of .*prog; hotload cannot reach thread-local variables yet/);
  expect(r.written).toBe(false);
});

test('a patch replacing one function twice with different code is refused (one jump per entry)', async () => {
  const r = await mk('twice', '#include <hotload.h>\nint value_a(void) { return 1; }\nint value_b(void) { return 2; }\nHOTLOAD_REPLACE(value, value_a);\nHOTLOAD_REPLACE(value, value_b);\n');
  expect(r.json.error.code).toBe('UNPATCHABLE');
  expect(r.json.error.details).toEqual([expect.stringMatching(/^value: replaced twice by this patch \(by value_[ab] and value_[ab]\); replace it once$/)]);
  expect(r.written).toBe(false);
});
