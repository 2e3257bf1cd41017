// `hotload mkpatch --from <old build> --to <new build>`: a patch made from a
// rebuild, with no code written by hand.
//
// 1. Pair the object files of the two builds and diff them (diff-builds.ts).
// 2. Take the changed functions' sections from the new objects, and follow
//    their relocations. Each reference goes to one of:
//    - the running program (`target`): unchanged and changed functions alike
//      (a changed one's prologue jumps to its newest version, so a later patch
//      still reaches every caller), and every datum the program already has,
//      `static` ones included, so state carries over;
//    - the patch itself: new functions, new data (unless an earlier patch of
//      this program already added it: then that copy, see `data`), string
//      literals, jump tables and other read-only data;
//    - a shared library (`lib`): calls go through a two-instruction thunk whose
//      8-byte slot holds the function's address.
// 3. Write all of it as assembly (the bytes, with every relocated field an
//    expression) and let the system assembler and linker make a .so with no
//    undefined symbols. Fields that refer outside the patch are left zero and
//    listed in `.hotload.fixups`; `.hotload.rebuild` (JSON) describes what each
//    refers to.
// 4. While they run (another process, another core), compare the two builds'
//    type layouts (layouts.ts: compareLayouts). A layout change refuses the
//    patch: the linked file is thrown away and nothing is written.
//
// Invariants: every refusal is reported in one list, layout changes included
// (they are compared before any refusal or other error is thrown); `out` is
// written only once every check has passed.
//
// The code keeps its 32-bit rip-relative references to the program, so the
// patch must be mapped within 2 GiB of it: `hotload attach` maps such a patch
// itself, next to the program, and fills in the fixups (load-near.ts), instead
// of calling dlopen, which would put it anywhere.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { ElfFile, ElfSymbol, STT, loadPadIndex } from '@hotload/elf';
import { key, relocTarget } from './build';
import { BuildDiff, diffObjectSets } from './diff-builds';
import { compareLayouts } from './layouts';
import { objectFiles } from './object-files';
import { DESCRIPTION_SECTION, PatchTarget, TARGET_SECTION, readPatch } from './read-patch';
import { PatchPlan, planPatch } from './check-patch';
import { FIXUP_SECTION, REBUILD_SECTION, RebuildInfo } from './rebuild-format';
import { isColdPart, Generator, Unit, asmName, emitBytes, emitSection, functionOfPart, unwindRecords } from './rebuild-asm';
import { debugAsm } from './rebuild-debug';
import { Runner, runProgram } from './run-program';
import { linkPlan, startLink } from './link-patch';
import { refuseIfNotRunning, targetOwns } from './running-build';

/** The one program (executable or shared library with a build-id) in a build directory. */
export function findProgram(build: string): string {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && !e.name.endsWith('.o')) {
        const head = Buffer.alloc(18);
        let n = 0;
        try {
          const fd = fs.openSync(p, 'r');
          n = fs.readSync(fd, head, 0, 18, 0);
          fs.closeSync(fd);
        } catch {
          continue; // unreadable: not the program
        }
        if (n === 18 && head.readUInt32BE(0) === 0x7f454c46 && (head.readUInt16LE(16) === 2 || head.readUInt16LE(16) === 3)) found.push(p);
      }
    }
  };
  if (fs.existsSync(build) && fs.statSync(build).isDirectory()) walk(build);
  if (found.length !== 1) {
    throw new HotloadError('USAGE', found.length ? `${build} holds ${found.length} programs (${found.map((f) => path.relative(build, f)).join(', ')}); name the one the process runs with --target` : `name the program the process runs with --target (none found in ${build})`);
  }
  return found[0];
}

export interface RebuildOptions {
  from: string;
  to: string;
  target: string;
  out: string;
  /**
   * Functions to replace even when unchanged, as diff key -> object file
   * (relative path): watch passes what earlier patches replaced, so a function
   * edited back to its original is replaced by that again.
   */
  also?: Record<string, string>;
  /**
   * Functions the process runs from a patch (by the target's symbol names):
   * their code in `from` may be a later build's than the target file's. watch
   * started again on a patched process passes them; all else in `from` must
   * be the target's build.
   */
  redirected?: ReadonlySet<string>;
  /** What the patch is, in words (shown by status, ps, --json). */
  description?: string;
  cc?: string;
  /**
   * Starts the linker and resolves when it has exited (default: from this
   * process). watch passes its helper process's, which starts programs for
   * less (see packages/api/src/spawner.ts).
   */
  run?: Runner;
}

export interface RebuildResult {
  out: string;
  target: PatchTarget;
  plan: PatchPlan;
  /** Per object file: the diff against the old build. */
  diffs: { file: string; diff: BuildDiff }[];
  /** Replaced functions (diff keys), and the new ones the patch adds. */
  replaced: string[];
  /** The object file (relative path) of each replaced function. */
  replacedIn: Record<string, string>;
  added: string[];
  /** Changed object files of the tree left out: most of their functions are not the target's (another module's). */
  otherModules: string[];
}

/**
 * Object files of the target's in --from with no counterpart in --to: their
 * compile failed (or they were never built), so the two builds cannot be
 * compared as wholes; a patch cannot remove code either. Refused, named.
 */
function refuseIfMissing(from: string, to: string, otherModules: string[]): void {
  if (!fs.statSync(from).isDirectory() || !fs.statSync(to).isDirectory()) return;
  const toObjs = objectFiles(to);
  const missing = [...objectFiles(from).keys()].filter((rel) => !toObjs.has(rel) && !otherModules.includes(rel)).sort();
  if (missing.length === 0) return;
  throw new HotloadError('FILE_NOT_FOUND', `${to} has no ${missing[0]}${missing.length > 1 ? ` (nor ${missing.length - 1} more object file${missing.length > 2 ? 's' : ''})` : ''}, which ${from} has: its compile failed, or it was not built`, {
    details: missing.map((rel) => `${rel}: in ${from}, not in ${to}`),
    hint: 'Build the new tree completely (the compiler errors say why an object is missing). A patch cannot remove code from a running process: a source file deleted from the program needs a restart.',
  });
}

/**
 * Build a patch from two builds of a program: the driver. Each step says what
 * it establishes; nothing is written until step 7, and the work directory of
 * steps 7-8 goes on any error.
 */
export async function mkpatchFromBuilds(opts: RebuildOptions): Promise<RebuildResult> {
  const cc = opts.cc ?? process.env.CC ?? 'cc';
  const run = opts.run ?? runProgram;
  void linkPlan(cc, run); // asked now, used when the patch links

  // 1. The target, tied to its build-id.
  const targetElf = ElfFile.open(opts.target);
  const target = patchTarget(opts.target, targetElf);

  // 2. What changed, object file by object file: files the rebuild left as
  //    they were are skipped (a one-file edit in a large build), except those
  //    holding functions earlier patches replaced; other modules' files are set apart.
  const set = diffObjectSets(objectFiles(opts.from), objectFiles(opts.to), { always: new Set(Object.values(opts.also ?? {})), belongs: targetOwns(targetElf), layouts: false });
  const refusals = new Refusals(set);

  // 3. The old build is the one the process runs; the new one is whole; no
  //    change is one a running process cannot take.
  refuseIfNotRunning(opts.from, opts.target, targetElf, opts.redirected);
  refuseIfMissing(opts.from, opts.to, set.otherModules);
  if (set.merged.refused.length) refusals.throwIfAny();

  // 4. The functions to replace.
  const units: Unit[] = set.units.map((u, idx) => ({ idx, rel: u.rel, b: u.b, include: new Set(), replace: [] }));
  const g = new Generator(targetElf, units);
  const choice = chooseReplacements(units, set.units, g, new Set(Object.keys(opts.also ?? {})));

  // 5. Nothing to replace: a refusal (a layout edit alone changes no
  //    function), another module's edit, or truly no change; never silence.
  if (choice.replaced.length === 0 && g.problems.length === 0) {
    refusals.throwIfAny();
    throw noChange(opts, target, set.otherModules);
  }

  // 6. The patch's code: every section the replacements need, following
  //    their relocations, then their unwind tables; every reference checked.
  const code = emitCode(g, units, choice.queue);
  if (g.problems.length) {
    refusals.throwIfAny();
    throw new HotloadError('REBUILD_UNSUPPORTED', `${g.problems.length} reference${g.problems.length === 1 ? '' : 's'} of the changed code cannot be patched`, { details: g.problems });
  }

  // 7. The assembly (code, metadata, the debugger's DWARF), linked into a
  //    shared library while the type layouts are compared beside it.
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-rebuild-'));
  try {
    const src = path.join(work, 'patch.s');
    fs.writeFileSync(src, patchAssembly(opts, target, g, units, code));
    const tmpOut = path.join(work, 'patch.so');
    // The plan was asked when mkpatch started: awaiting it here only lets the
    // event loop take the answer in.
    const linking = startLink(await linkPlan(cc, run), cc, src, tmpOut, work, run);
    const layoutError = refusals.compareLayoutsNow();
    const r = await linking;
    if (process.env.HOTLOAD_KEEP_ASM) fs.copyFileSync(src, process.env.HOTLOAD_KEEP_ASM);
    if (layoutError) throw layoutError;
    refusals.throwIfAny();
    if (r.error || r.status !== 0) throw linkFailed(cc, r);

    // 8. Checked as attach will check it, then written.
    const patchElf = ElfFile.open(tmpOut);
    const plan = planPatch(readPatch(patchElf), patchElf, targetElf, loadPadIndex(targetElf));
    fs.copyFileSync(tmpOut, opts.out);
    fs.chmodSync(opts.out, 0o644);
    const diffs = set.units.map((u) => ({ file: u.rel, diff: u.diff }));
    return { out: opts.out, target, plan, diffs, replaced: choice.replaced.sort(), replacedIn: choice.replacedIn, added: addedFunctions(units, g).sort(), otherModules: set.otherModules.sort() };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The patch's link failed. The assembler refusing the generated assembly is a
 * hotload bug (INTERNAL); the compiler driver failing otherwise (a --cc or $CC
 * that is not a working driver) is the build's (COMPILE_FAILED), with its output.
 */
function linkFailed(cc: string, r: { status: number | null; output: string; error?: string }): HotloadError {
  const output = (r.output || r.error || '').trim();
  const details = output ? output.split('\n') : [];
  if (/patch\.s:\d+/.test(output)) return new HotloadError('INTERNAL', `linking the patch failed (${cc}): the assembler refused the generated assembly`, { details });
  const how = r.error ? `could not be run (${r.error})` : `exited ${r.status ?? 'on a signal'}${output ? '' : ' and said nothing'}`;
  return new HotloadError('COMPILE_FAILED', `the compiler driver \`${cc}\` ${how} while linking the patch`, { details, hint: 'Check that --cc (or $CC) names a working C compiler driver, such as gcc or clang.' });
}

/** What `.hotload.target` records: the target's build-id and names. */
function patchTarget(file: string, elf: ElfFile): PatchTarget {
  const buildId = elf.buildId();
  if (!buildId) throw new HotloadError('PATCH_BUILD_MISMATCH', `${file} has no GNU build-id, so a patch cannot be tied to it`, { hint: 'Link the target with -Wl,--build-id (the default of Debian gcc).' });
  return { version: 1, buildId, module: path.basename(file), path: path.resolve(file) };
}

/**
 * The refusals of a diff made without its type layouts: those are compared
 * once, while the patch links or before any refusal or error is thrown, so
 * that a layout change is never left out of what is refused.
 */
class Refusals {
  private compared = false;
  constructor(private readonly set: Parameters<typeof compareLayouts>[0]) {}

  /** Compare the layouts now; their error (a build without types), if any, is returned to be thrown once the linker has finished. */
  compareLayoutsNow(): unknown {
    try {
      this.layouts();
      return undefined;
    } catch (e) {
      return e;
    }
  }

  throwIfAny(): void {
    this.layouts();
    const refused = this.set.merged.refused.map((r) => `${r.symbol}: ${r.reason}`);
    if (refused.length) {
      throw new HotloadError('UNPATCHABLE', `${refused.length} change${refused.length === 1 ? '' : 's'} cannot be patched into a running process`, {
        details: refused,
        hint: 'Restart the program to take these changes (there is no --force: the running state has the old layout or values).',
      });
    }
  }

  private layouts(): void {
    if (this.compared) return;
    this.compared = true;
    compareLayouts(this.set);
  }
}

/**
 * Step 4: the functions to replace: changed ones, the users of changed
 * read-only data, and those earlier patches replaced (`also`), each in the
 * program too. Each is one section of the new build (its code goes in whole);
 * the sections to emit start the queue.
 */
function chooseReplacements(units: Unit[], diffs: { diff: BuildDiff }[], g: Generator, also: Set<string>) {
  const queue: [Unit, number][] = [];
  const replaced: string[] = [];
  const replacedIn: Record<string, string> = {};
  const replacedAt = new Set<number>();
  for (const u of units) {
    const d = diffs[u.idx].diff;
    const changedRo = new Set(d.data.changed);
    // A changed part (`f.cold`: the unlikely code, a catch handler) changes its function.
    const changed = new Set([...d.changed, ...d.changed.flatMap(functionOfPart)]);
    for (const [k, f] of u.b.items(STT.FUNC)) {
      const usesChangedRo = f.relocs.some((r) => {
        const base = relocTarget(r);
        return changedRo.has(base) || [...changedRo].some((c) => c.split('@')[0] === base);
      });
      if (!changed.has(k) && !also.has(k) && !usesChangedRo) continue;
      if (isColdPart(f.name)) continue; // a .cold part comes with its function (f.part.N has an entry of its own: replaced itself)
      const inTarget = g.inTarget(f.sym);
      if (!inTarget) continue; // new: included if referenced
      // An inline function or template instance each object keeps a copy of
      // (weak, one in the program): replaced once, from the first object.
      if (replacedAt.has(inTarget.value)) continue;
      // Aliases (one address, several names: clang's complete- and
      // base-object constructors C1/C2) are one function: replaced once, and
      // attach redirects every name of it (one pad).
      if (u.replace.some((s) => s.shndx === f.sym.shndx && s.value === f.sym.value)) continue;
      const sec = u.b.elf.sections[f.sym.shndx];
      const others = (u.b.symsBySection.get(f.sym.shndx) ?? []).filter((s) => s.type === STT.FUNC && s !== f.sym && s.value !== f.sym.value && !isColdPart(s.name));
      if (others.length) {
        const why = sec.name.startsWith('.text.') ? 'the compiler put them in one section even with -ffunction-sections; hotload replaces sections whole' : 'build with -ffunction-sections (see `hotload flags --diff`)';
        g.problems.push(`${k}: shares section ${sec.name} with ${others.map((s) => s.name).join(', ')}; ${why}`);
        continue;
      }
      u.replace.push(f.sym);
      replacedAt.add(inTarget.value);
      replaced.push(k);
      replacedIn[k] = u.rel;
      if (!u.include.has(f.sym.shndx)) {
        u.include.add(f.sym.shndx);
        queue.push([u, f.sym.shndx]);
      }
    }
  }
  return { queue, replaced, replacedIn };
}

/** Step 5: no function of the target changed; say where the edit is, if anywhere. */
function noChange(opts: RebuildOptions, target: PatchTarget, otherModules: string[]): HotloadError {
  const others = [...otherModules].sort();
  if (others.length) {
    // Not silence: the edit is real, but in another module of the tree.
    return new HotloadError('NO_CHANGE', `no function of ${target.module} changed; the changed object file${others.length === 1 ? '' : 's'} ${others.join(', ')} belong${others.length === 1 ? 's' : ''} to another module`, {
      details: others,
      hint: `Patch that module with its own --target (the program or the library the process loaded); ${target.module} runs the same code.`,
    });
  }
  return new HotloadError('NO_CHANGE', `${opts.to} runs the same code as ${opts.from}: no function changed`);
}

/**
 * Step 6: the assembly of every included section (following relocations
 * includes more), then the unwind tables of the included functions (after the
 * code, whose sections they refer to; their LSDAs may include more read-only
 * data). `names`: each emitted symbol's name in the patch (unique).
 */
function emitCode(g: Generator, units: Unit[], queue: [Unit, number][]) {
  const names = new Map<ElfSymbol, string>();
  const used = new Set<string>();
  const nameOf = (s: ElfSymbol) => {
    let n = s.name;
    for (let i = 2; used.has(n) || n.startsWith('hotload_') || n.startsWith('hl.'); i++) n = `${s.name}.hl${i}`;
    used.add(n);
    names.set(s, n);
  };
  const asm: string[] = [];
  const done = new Set<string>();
  const drain = () => {
    while (queue.length) {
      const [u, sec] = queue.shift()!;
      const k = `${u.idx}.${sec}`;
      if (done.has(k)) continue;
      done.add(k);
      for (const s of u.b.symsBySection.get(sec) ?? []) if (!names.has(s) && s.name) nameOf(s);
      asm.push(emitSection(g, u, sec, queue, names));
    }
  };
  drain();
  let ehFrame: RebuildInfo['ehFrame'];
  for (const u of units) {
    const rec = unwindRecords(u);
    if (!rec) continue;
    // One list in one section: only the first block aligns (padding between
    // records would read as the terminator).
    const header = ['\t.section .eh_frame,"a",@unwind', ...(ehFrame ? [] : ['\t.p2align 3'])];
    ehFrame ??= { label: `hl.eh.${u.idx}`, personality: false };
    ehFrame.personality ||= rec.personality;
    asm.push(emitBytes(g, u, { header, label: `hl.eh.${u.idx}`, name: `.eh_frame (${u.rel})`, data: rec.data, relocs: rec.relocs, labelsAt: new Map(), names, queue }));
    drain();
  }
  // The linker rewrites .eh_frame (and builds .eh_frame_hdr from it, which
  // perf and other unwinders read) and drops a zero terminator inside it; one
  // in `.eh_frame.*` lands right after it, for __register_frame.
  if (ehFrame) asm.push('\t.section .eh_frame.hotload_end,"a",@progbits\n\t.long 0');
  return { asm, names, ehFrame };
}

/**
 * Step 7: the whole assembly: the code, then the metadata attach reads (what
 * each function replaces, the prev slots, the target, the references to fix
 * up) and the DWARF of the objects the code comes from, for debuggers (after
 * the code: it refers to the code's labels and to the data the code reached).
 */
function patchAssembly(opts: RebuildOptions, target: PatchTarget, g: Generator, units: Unit[], code: ReturnType<typeof emitCode>): string {
  const { names } = code;
  const meta: string[] = [];
  const pairs = units.flatMap((u) => u.replace.map((s) => `${key(s)}\\0${names.get(s)}\\0`));
  meta.push(`\t.section ${'.hotload.replace'},"a",@progbits\n\t.ascii "${pairs.join('')}"`);
  meta.push(`\t.section ${TARGET_SECTION},"a",@progbits\n\t.asciz ${JSON.stringify(JSON.stringify(target))}`);
  if (opts.description) meta.push(`\t.section ${DESCRIPTION_SECTION},"a",@progbits\n\t.asciz ${JSON.stringify(opts.description.replace(/[\x00-\x1f]/g, " "))}`);
  meta.push('\t.data\n\t.p2align 3');
  for (const u of units) {
    for (const s of u.replace) {
      const n = `hotload_prev__${names.get(s)}`;
      meta.push(`\t.globl ${asmName(n)}\n\t.type ${asmName(n)}, @object\n\t.size ${asmName(n)}, 8\n${asmName(n)}:\n\t.quad 0`);
    }
  }
  meta.push('\t.globl hotload_applied_at\n\t.type hotload_applied_at, @object\n\t.size hotload_applied_at, 8\nhotload_applied_at:\n\t.quad 0');
  meta.push('\t.globl hotload_source_path\n\t.type hotload_source_path, @object\n\t.size hotload_source_path, 512\nhotload_source_path:\n\t.zero 512');
  const debug = debugAsm(g, units);
  const info: RebuildInfo = { version: 1, refs: g.refs, data: g.dataDefs, ehFrame: code.ehFrame, ...(debug.sections.length ? { debug: { sections: debug.sections } } : {}) };
  meta.push(`\t.section ${REBUILD_SECTION},"",@progbits\n\t.ascii ${JSON.stringify(JSON.stringify(info))}`);
  meta.push(`\t.section ${FIXUP_SECTION},"",@progbits`);
  for (const f of g.fixups) meta.push(`\t.quad ${f.at}\n\t.quad ${f.addend}\n\t.long ${f.kind}\n\t.long ${f.ref}`);
  meta.push('\t.section .note.GNU-stack,"",@progbits');
  return `# generated by hotload mkpatch --from ${opts.from} --to ${opts.to}\n${[...code.asm, ...g.extraAsm, ...debug.asm, ...meta].join('\n')}\n`;
}

/** Functions the patch brings that the target does not have (new helpers the changed code calls). */
function addedFunctions(units: Unit[], g: Generator): string[] {
  const added: string[] = [];
  for (const u of units) {
    for (const sec of u.include) {
      for (const s of u.b.symsBySection.get(sec) ?? []) if (s.type === STT.FUNC && !g.inTarget(s) && !isColdPart(s.name)) added.push(key(s));
    }
  }
  return added;
}
