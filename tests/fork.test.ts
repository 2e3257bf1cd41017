// A master and a worker it forked, running one build (as nginx's do): a patch
// applied to the worker only is lost by the workers forked later, so attach
// warns, naming the parent; patched first, the parent passes the patch to
// what it forks; the parent (whose own parent is another program) gets no warning.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Target, computePatch, hotload, mkpatch, tmpdir } from './helpers';

const SRC = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
__attribute__((noipa)) int compute(int x) { return x + 1; }
static int counter;
static void loop(const char *who) { for (;;) { counter++; printf("%s %d compute %d\\n", who, (int)getpid(), compute(5)); usleep(20000); } }
static void on_usr1(int sig) { (void)sig; }
int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGUSR1, on_usr1);
  if (fork() == 0) loop("worker");
  /* On SIGUSR1 the master forks one more worker (a reload). */
  for (;;) { pause(); if (fork() == 0) loop("late-worker"); }
}
`;

let prog: string;
let t: Target | undefined;
beforeAll(() => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'master.c'), SRC);
  execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', 'master.c', '-o', 'master'], { cwd: dir });
  prog = path.join(dir, 'master');
});
afterEach(async () => {
  await t?.stop(); // the master and every worker it forked
  t = undefined;
});

test('patching the worker alone warns that the parent lacks it; a worker forked later runs the old code, as said; patching the master first gives no warning and later workers have it', async () => {
  const patch = await mkpatch(computePatch(4), prog, 'fork');
  t = Target.start(prog);
  const worker = Number(/^worker (\d+) /.exec(await t.waitFor(/^worker \d+ compute 6$/))![1]);
  const w = await hotload(['attach', String(worker), patch, '--json']);
  expect(w.code).toBe(0);
  expect(w.one.notes).toContain(`warning: parent process ${t.pid} runs the same build without this patch: processes it forks from now on (a reload, a worker respawned) will not have it; patch process ${t.pid} too (a fork takes the patches of its parent)`);
  await t.next(new RegExp(`^worker ${worker} compute 1009$`));
  process.kill(t.pid, 'SIGUSR1');
  await t.next(/^late-worker \d+ compute 6$/); // the warning was right
  const m = await hotload(['attach', String(t.pid), patch, '--json']);
  expect(m.code).toBe(0);
  expect(m.one.notes.filter((n: string) => n.startsWith('warning: parent'))).toEqual([]); // its parent runs another program
  process.kill(t.pid, 'SIGUSR1');
  await t.next(/^late-worker \d+ compute 1009$/); // forked from the patched master: patched
  const text = await hotload(['attach', String(worker), patch]);
  expect(text.code).toBe(10); // already applied there
});
