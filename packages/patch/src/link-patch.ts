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
    // Never rejected: nobody may be waiting yet, and any failure means "run the driver".
    plan = Promise.all([run(cc, ['-###', ...PATCH_LINK_FLAGS, IN, '-o', OUT], { cwd, timeoutMs: 10000 }), run(cc, ['-print-prog-name=ld'], { cwd, timeoutMs: 10000 })])
      .then(([shown, ld]) => (shown.status === 0 && ld.status === 0 && ld.stdout.trim() ? parseDriverPlan(shown.output, ld.stdout.trim()) : undefined))
      .catch(() => undefined);
    plans.set(cc, plan);
  }
  return plan;
}

/** A word for sh, quoted unless it needs none. */
const shWord = (a: string) => (/^[A-Za-z0-9_./=:,+@%-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`);

/**
 * Start linking `src` (in `cwd`) into the shared object `out`, through `run`,
 * at once (before this returns: the caller goes on working while it links).
 * With a plan, the assembler and then the linker in one `sh -c` (so the link
 * follows the assembly without waiting for this process's event loop, which
 * mkpatch keeps busy meanwhile); without, the driver. The result is the
 * failing step's or the last.
 */
export function startLink(plan: Plan | undefined, cc: string, src: string, out: string, cwd: string, run: Runner = runProgram): Promise<Ran> {
  if (!plan) return run(cc, [...PATCH_LINK_FLAGS, src, '-o', out], { cwd });
  const obj = path.join(path.dirname(path.resolve(cwd, out)), 'hotload-patch.o');
  const put = (file: string, args: string[]) => [file, ...args.map((a) => (a === IN ? src : a === OUT ? out : a === '\0obj' ? obj : a))].map(shWord).join(' ');
  return run('sh', ['-c', `${put(plan.as.file, plan.as.args)} && ${put(plan.ld.file, plan.ld.args)}`], { cwd });
}

/** linkPlan, then startLink: for a caller with nothing to do while the plan is asked. */
export async function linkPatch(cc: string, src: string, out: string, cwd: string, run: Runner = runProgram): Promise<Ran> {
  return startLink(await linkPlan(cc, run), cc, src, out, cwd, run);
}
