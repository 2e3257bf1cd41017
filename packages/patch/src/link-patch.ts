// Linking a patch's assembly into a shared object, as `cc -shared -nostdlib
// FLAGS patch.s -o patch.so` would, with the assembler and the linker run
// directly: the compiler driver, and GCC's collect2 between it and ld, are two
// processes more per patch (5-8 ms on a one-function patch, where watch's
// whole own part is about 100 ms).
//
// The commands are the driver's own, asked once per compiler (`cc -###`, what
// it would run, and `cc -print-prog-name=ld`), with the file names put in. The
// linker plugin options are left out: they serve link-time optimisation, and
// an assembled patch has no LTO code. A driver whose plan is not one GNU `as`
// and one collect2 or ld (clang's integrated assembler, a wrapper script) is
// run as it is.

import * as path from 'path';
import { Ran, Runner, runProgram } from './run-program';

/** The flags every patch is linked with. */
export const PATCH_LINK_FLAGS = ['-shared', '-nostdlib', '-Wl,--build-id', '-Wl,--eh-frame-hdr', '-Wl,-z,noexecstack', '-Wl,-z,now'];

interface Plan {
  as: { file: string; args: string[] };
  ld: { file: string; args: string[] };
}

const IN = 'hotload-in.s';
const OUT = 'hotload-out.so';
const plans = new Map<string, Promise<Plan | undefined>>();

/** The words of one line of `cc -###` (arguments in double quotes, with \" and \\ inside; or bare). */
export function driverWords(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]);
  return out;
}

/**
 * The driver's plan from its `-###` output: the assembler step (GNU as: its
 * `-o` is the object the link step reads) and the link step (collect2 or
 * ld, run as `ld`), with IN, OUT and that object as placeholders. Undefined
 * for anything else.
 */
export function parseDriverPlan(text: string, ld: string): Plan | undefined {
  const steps = text.split('\n').filter((l) => l.startsWith(' ')).map(driverWords);
  if (steps.length !== 2) return undefined;
  const [asStep, linkStep] = steps;
  if (path.basename(asStep[0]) !== 'as') return undefined;
  const o = asStep.indexOf('-o');
  if (o < 0 || o + 1 >= asStep.length || asStep.filter((a) => a === IN).length !== 1) return undefined;
  const obj = asStep[o + 1];
  if (!['collect2', 'ld', 'ld.bfd', 'ld.gold'].includes(path.basename(linkStep[0])) || !linkStep.includes(obj) || !linkStep.includes(OUT)) return undefined;
  const ldArgs: string[] = [];
  for (let i = 1; i < linkStep.length; i++) {
    const a = linkStep[i];
    if (a === '-plugin') i++; // and its path
    else if (!a.startsWith('-plugin-opt=')) ldArgs.push(a === obj ? '\0obj' : a);
  }
  const asArgs = asStep.slice(1).map((a) => (a === obj ? '\0obj' : a));
  return { as: { file: asStep[0], args: asArgs }, ld: { file: path.basename(linkStep[0]) === 'collect2' ? ld : linkStep[0], args: ldArgs } };
}

/**
 * What `cc` would run to link a patch (undefined: run the driver itself),
 * asked once per compiler and process, without waiting: mkpatch asks when it
 * starts, and the answer is in by the time it links.
 */
export function linkPlan(cc: string, run: Runner = runProgram): Promise<Plan | undefined> {
  let plan = plans.get(cc);
  if (!plan) {
    const cwd = process.cwd();
    plan = Promise.all([run(cc, ['-###', ...PATCH_LINK_FLAGS, IN, '-o', OUT], { cwd, timeoutMs: 10000 }), run(cc, ['-print-prog-name=ld'], { cwd, timeoutMs: 10000 })]).then(([shown, ld]) =>
      shown.status === 0 && ld.status === 0 && ld.stdout.trim() ? parseDriverPlan(shown.output, ld.stdout.trim()) : undefined,
    );
    plans.set(cc, plan);
  }
  return plan;
}

/**
 * Link `src` (in `cwd`) into the shared object `out`, through `run`: the
 * assembler and the linker directly when the driver's plan is known, else the
 * driver. The result is that of the step that failed, or of the last.
 */
export async function linkPatch(cc: string, src: string, out: string, cwd: string, run: Runner = runProgram): Promise<Ran> {
  const plan = await linkPlan(cc, run);
  if (!plan) return run(cc, [...PATCH_LINK_FLAGS, src, '-o', out], { cwd });
  const obj = path.join(path.dirname(path.resolve(cwd, out)), 'hotload-patch.o');
  const put = (args: string[]) => args.map((a) => (a === IN ? src : a === OUT ? out : a === '\0obj' ? obj : a));
  const as = await run(plan.as.file, put(plan.as.args), { cwd });
  if (as.status !== 0 || as.error) return as;
  return run(plan.ld.file, put(plan.ld.args), { cwd });
}
