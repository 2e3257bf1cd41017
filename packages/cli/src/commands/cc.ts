// hotload cc / hotload c++: the compiler, with gcc's patchable-entry sections
// made linkable (packages/elf/src/patchable-asm.ts). Use it as CC / CXX:
//   make CXX="hotload c++"      cmake -DCMAKE_CXX_COMPILER_LAUNCHER=... (see README)
// Every argument goes to the real compiler ($HOTLOAD_CC / $HOTLOAD_CXX, else
// gcc / g++). A compile of one source to an object (-c) with
// -fpatchable-function-entry is done in two steps, to assembly and from it,
// with the assembly fixed in between; anything else (linking, clang, -E, several
// sources) runs unchanged. Exit status: the compiler's.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { fixPatchableEntries } from '@hotload/elf';

const SOURCE = /\.(c|cc|cp|cpp|cxx|c\+\+|C|i|ii)$/;

/** A compile of one source to one object, split into its parts; undefined for anything else. */
function singleCompile(args: string[]): { source: string; out: string; rest: string[] } | undefined {
  if (!args.includes('-c') || args.some((a) => a === '-E' || a === '-S' || a === '-x' || a.startsWith('-x'))) return undefined;
  if (!args.some((a) => a.startsWith('-fpatchable-function-entry'))) return undefined;
  const rest: string[] = [];
  const sources: string[] = [];
  let out: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-o') out = args[++i];
    else if (a.startsWith('-o') && a.length > 2) out = a.slice(2);
    else if (a === '-c') continue;
    else if (!a.startsWith('-') && SOURCE.test(a) && !['-MF', '-MT', '-MQ', '-I', '-include', '-isystem', '-D', '-U'].includes(args[i - 1])) sources.push(a);
    else rest.push(a);
  }
  if (sources.length !== 1) return undefined;
  rest.push(sources[0]);
  return { source: sources[0], out: out ?? path.basename(sources[0]).replace(SOURCE, '.o'), rest };
}

function isClang(compiler: string): boolean {
  const v = spawnSync(compiler, ['--version'], { encoding: 'utf8' });
  return /clang/i.test(v.stdout ?? '');
}

/**
 * Run the compiler wrapper; returns the exit status. `lang` 'c' or 'c++' takes
 * the compiler from HOTLOAD_CC / HOTLOAD_CXX (else gcc / g++); anything else
 * is the compiler itself (`hotload launch /usr/bin/g++ ...`).
 */
export function runCompiler(lang: string, args: string[]): number {
  const compiler = lang === 'c' ? process.env.HOTLOAD_CC || 'gcc' : lang === 'c++' ? process.env.HOTLOAD_CXX || 'g++' : lang;
  const run = (a: string[]) => {
    const r = spawnSync(compiler, a, { stdio: 'inherit' });
    if (r.error) {
      process.stderr.write(`hotload: cannot run ${compiler}: ${r.error.message}\n`);
      return 127;
    }
    return r.status ?? 1;
  };
  const job = singleCompile(args);
  if (!job || isClang(compiler)) return run(args);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-cc-'));
  try {
    const asm = path.join(dir, path.basename(job.out).replace(/\.o$/, '') + '.s');
    // Dependency files keep naming the object, as the build asked.
    const deps = job.rest.some((a) => a === '-MD' || a === '-MMD');
    const extra = deps && !job.rest.some((a) => a === '-MF') ? ['-MF', job.out.replace(/\.o$/, '') + '.d'] : [];
    if (deps && !job.rest.some((a) => a === '-MT' || a === '-MQ')) extra.push('-MT', job.out);
    const s = run(['-S', ...job.rest, ...extra, '-o', asm]);
    if (s !== 0) return s;
    const fixed = fixPatchableEntries(fs.readFileSync(asm, 'utf8'));
    fs.writeFileSync(asm, fixed.asm);
    return run(['-c', asm, '-o', job.out]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export const ccCommand = {
  command: 'cc',
  describe: 'Run the C compiler (gcc) with its patchable-entry sections made linkable: CC="hotload cc"',
  builder: (y: import('yargs').Argv) => y,
  run: () => 0,
};
export const launchCommand = {
  command: 'launch <compiler>',
  describe: 'The same as a build system\'s compiler launcher: `hotload launch g++ -c a.cpp` (CMake: CMAKE_CXX_COMPILER_LAUNCHER="hotload;launch")',
  builder: (y: import('yargs').Argv) => y,
  run: () => 0,
};
export const cxxCommand = {
  command: 'c++',
  describe: 'Run the C++ compiler (g++) with its patchable-entry sections made linkable (g++ 12 cannot link inline functions or templates used in two files otherwise): CXX="hotload c++"',
  builder: (y: import('yargs').Argv) => y,
  run: () => 0,
};
