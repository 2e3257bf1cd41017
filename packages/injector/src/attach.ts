// `hotload attach <pid> patch.so`: the driver. Each step is listed in order
// with why it is there; the invariants between them are stated where they
// start to hold. Nothing in the process changes until step 6; from step 9 on,
// every change is undone if a later one fails (all or nothing).

import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { ElfFile, PadFunction, demangled, loadPadIndex } from '@hotload/elf';
import { PatchPlan, planPatch, readPatch, readRebuild } from '@hotload/patch';
import { NOP2, PAD_BEFORE, PAD_JUMP_ADDRESS, entryJump, padJump } from '@hotload/x86';
import { Session } from './session';
import { Module, findTargetModule, hex, modules, readMaps, requireRunning } from './read-process';
import { functionStack, functionState, loadedPatches, prevSlotAddress, readSite } from './read-patches';
import { RevertedFunction, findLoadedPatch } from './revert';
import { callOnHost, findRuntime, placeStub, sleepMs, stopAndChooseHost, TargetRuntime } from './call-in-target';
import { anyPart, type CodeWrite } from './native';
import { readPatchFile, releaseStaging, stagePatch } from './stage-patch';
import { withProcessLock } from './process-lock';
import { runHook } from './run-hook';
import { loadNear } from './load-near';
import { ActiveFunction, activeFunctions, activeNote } from './active';
import { warmUnwind } from './unwind';
import { parentWarning } from './lineage';

export interface AttachOptions {
  /** Accept a patch file others could write. */
  allowUnsafeFile?: boolean;
  /** How long to wait for a safe moment to borrow a thread (ms). */
  safePointTimeoutMs?: number;
  /** How long dlopen may take in the process (ms). */
  callTimeoutMs?: number;
  /**
   * Redirect only at a moment when no replaced function is running on any
   * thread, looking again every 20 ms up to this many ms; then refuse
   * (FUNCTIONS_ACTIVE) naming them, with nothing redirected.
   */
  waitInactiveMs?: number;
  /**
   * A patch applied to the process that this one replaces, in the same stop:
   * its functions this patch also replaces take the new code (it leaves their
   * stacks, the new patch goes on top), the others go back to what they ran
   * before it, as a revert would; at no moment does the process run neither.
   */
  replace?: string;
  onProgress?: (step: string) => void;
}

export interface PatchedFunction {
  name: string;
  /** The C++ name (`Square::area() const`) of a mangled one. */
  demangled?: string;
  /** Runtime address of the function in the target. */
  old: string;
  /** Runtime address of the new code. */
  new: string;
  /** What the function ran before: "original", or the address of the previous patch. */
  previous: string;
}

export interface AttachResult {
  pid: number;
  patch: string;
  /** What the patch is, in words (HOTLOAD_DESCRIPTION, `mkpatch --description`). */
  description?: string;
  staged: string;
  module: string;
  buildId: string;
  functions: PatchedFunction[];
  notes: string[];
  /** Replaced functions running when the patch went in: those calls finish in the old code. */
  active: ActiveFunction[];
  /** With `replace`: the patch taken out in the same stop, and what each of its functions runs now. */
  replaced?: { patch: string; functions: RevertedFunction[] };
  threads: number;
  hostThread: number;
  /** The borrowed thread's registers had to be set by hand after rt_sigreturn (never expected). */
  repairedRegisters: boolean;
  /**
   * threadStopMaxMs: the longest any one thread was stopped, from its stop to
   * its resume; threadStopSumMs: the same added over every thread and stop.
   * stoppedMs: wall time of the all-threads stops, from the first interrupt to
   * the last resume (it also counts threads waiting for a CPU to take the
   * interrupt), added; maxStopMs: the longest of those. loadMs: dlopen on the
   * host; hostPausedMs: how long the borrowed thread did not run its own code
   * (its stop, dlopen, until the final detach).
   */
  timings: { totalMs: number; stoppedMs: number; maxStopMs: number; threadStopMaxMs: number; threadStopSumMs: number; loadMs: number; hostPausedMs: number };
}

interface Site {
  f: PadFunction;
  name: string;
  pad: bigint;
  entrySite: bigint;
  endbr: boolean;
  origPad: Buffer;
  origEntry: Buffer;
  /** Current jump target when already redirected (stacking). */
  previous?: bigint;
  /** Link-time address of the new function in the patch. */
  newValue: bigint;
  newAddr: bigint;
  prevSlot?: bigint;
}

/**
 * dlopen(file, RTLD_NOW) on a thread borrowed at a safe moment, while every
 * other thread runs; dlerror()'s text on failure. Returns with the host
 * stopped (its own state back in place) and the others running: the host is
 * the one thread certain to be needed in the final stop, and waking a thread
 * only to stop it again costs more (up to several ms on this VM) than keeping it.
 */
function loadInProcess(s: Session, rt: TargetRuntime, file: string, shownAs: string, opts: AttachOptions) {
  const callMs = opts.callTimeoutMs ?? 10000;
  const host = stopAndChooseHost(s, rt, opts.safePointTimeoutMs ?? 3000);
  const hostStoppedAt = process.hrtime.bigint();
  const res = callOnHost(s, rt, host.tid, rt.dlopen, Buffer.from(file + '\0'), [0n, rt.dlopenMode], callMs);
  if (res.value === 0n) {
    // dlerror() state is per thread: ask the same thread, which is back at the same safe moment.
    const msgPtr = callOnHost(s, rt, host.tid, rt.dlerror, Buffer.alloc(0), [], callMs).value;
    const msg = msgPtr ? s.readString(msgPtr) : 'dlopen returned NULL';
    s.resumeAllExcept(-1);
    throw new HotloadError('PATCH_DLOPEN_FAILED', `process ${s.pid} could not load ${shownAs}: ${msg}`);
  }
  return { hostThread: host.tid, loadMs: res.ns / 1e6, repaired: anyPart(res.repaired), hostStoppedAt, notes: [] as string[] };
}

/**
 * A copy of this patch is already loaded: refuse it if any of its functions
 * has it anywhere in its stack, on top or under later patches. Applying it
 * again on top would make its own prev slot point into the stack above it, a
 * loop that no revert order undoes; a reverted copy (in no stack) may go in again.
 */
function refuseIfInStack(s: Session, pid: number, patchFile: string, sites: Site[], mod: Module): void {
  const inStack = sites.filter((x) => x.previous !== undefined);
  if (inStack.length === 0) return;
  const patches = loadedPatches(pid);
  const details: string[] = [];
  for (const site of inStack) {
    const stack = functionStack(s, patches, { name: site.name, fn: site.f, module: mod, pad: site.pad, entrySite: site.entrySite, redirected: true, target: site.previous });
    const at = stack.findIndex((e) => e.address === site.newAddr);
    if (at < 0) continue;
    const shown = demangled(site.name);
    const above = stack.slice(0, at).map((e) => path.basename(e.patch.source ?? e.patch.staged));
    details.push(at === 0 ? `${shown}: it is the newest patch` : `${shown}: under ${above.join(', ')} (newest first)`);
  }
  if (details.length === 0) return;
  throw new HotloadError('PATCH_ALREADY_APPLIED', `${patchFile} is already applied to process ${pid}`, {
    details,
    hint: 'Nothing to do. To put it on top of the patches applied after it, revert it first (`hotload revert <pid> <patch>`), then attach it again; `hotload status <pid>` shows each function\'s stack.',
  });
}

/** Apply a patch to a running process (one hotload at a time per process). */
export function attach(pid: number, patchFile: string, opts: AttachOptions = {}): AttachResult {
  try {
    return withProcessLock(pid, () => attachLocked(pid, patchFile, opts));
  } finally {
    releaseStaging(); // the copy is mapped, or the attach failed: other hotloads may clean again
  }
}

/**
 * Steps 1-3 of attach: what it would do, decided from files and /proc only
 * (the process is neither stopped nor traced).
 */
function prepare(pid: number, patchFile: string, opts: Pick<AttachOptions, 'allowUnsafeFile'>) {
  // 1. Read the patch once, refusing a file others could have changed; check it is a patch.
  const bytes = readPatchFile(patchFile, opts.allowUnsafeFile);
  let patchElf: ElfFile;
  try {
    patchElf = new ElfFile(patchFile, bytes);
  } catch (e) {
    if (e instanceof HotloadError) throw new HotloadError('PATCH_BAD', `${patchFile}: ${e.message.replace(`${patchFile}: `, '')}`);
    throw e;
  }
  const meta = readPatch(patchElf);

  // 2. Find the module it was built for in the process, by build-id, and check every function against it.
  requireRunning(pid);
  const mods = modules(pid, readMaps(pid));
  const { mod, elf: targetElf } = findTargetModule(pid, mods, meta);
  const plan: PatchPlan = planPatch(meta, patchElf, targetElf, loadPadIndex(targetElf));

  // 3. Find dlopen in the process's C library and room for the call stub (files only).
  const rtBase = findRuntime(pid, mods);
  return { bytes, patchElf, meta, mods, mod, plan, rtBase };
}

/**
 * Would `patchFile` go into process `pid`? attach's first steps (read the
 * patch, find its build in the process, check every function against it,
 * find dlopen), which read files and /proc only: the process is not stopped,
 * traced or changed. Throws what attach would throw there; returns the plan.
 * rollout --dry-run checks with it.
 */
export function checkAttach(pid: number, patchFile: string, opts: Pick<AttachOptions, 'allowUnsafeFile'> = {}): PatchPlan {
  return prepare(pid, patchFile, opts).plan;
}

function attachLocked(pid: number, patchFile: string, opts: AttachOptions): AttachResult {
  const t0 = process.hrtime.bigint();
  const progress = opts.onProgress ?? (() => undefined);

  // 1-3. Read and check the patch against the process, from files and /proc (prepare).
  const { bytes, patchElf, meta, mods, mod, plan, rtBase } = prepare(pid, patchFile, opts);

  // 4. Give the process a private copy of exactly the bytes checked above.
  const staged = stagePatch(pid, patchFile, bytes);

  // 5. Open the process's memory; nothing is stopped yet. Every path from here
  //    ends in session.close(), which lets every thread go. What each
  //    prologue holds now is read while the process runs (step 9 checks the
  //    bytes again); a copy already loaded (applied before, maybe reverted
  //    since) is reused, unless it is in a function's stack already.
  const s = Session.open(pid);
  try {
    const sites = readSites(s, pid, mod, plan);
    const biasOf = () => loadedBias(pid, staged.staged, patchElf);
    let patchBias = biasOf();
    if (patchBias !== undefined) {
      setNewAddresses(sites, patchBias);
      refuseIfInStack(s, pid, patchFile, sites, mod);
    }
    // 5b. With --replace: the patch to take out, and the writes that take it
    //     out of every stack, made in step 9's stop (nothing is written yet).
    const replacing = opts.replace !== undefined ? takeOut(s, pid, opts.replace, sites, mod) : undefined;

    // 6. Put the call stub in dead bytes at the end of an executable page. No
    //    thread runs there, so this needs no stop.
    const rt: TargetRuntime = { ...rtBase, stub: placeStub(s, rtBase.stubCandidates) };

    // 7. Stop every thread for a moment, borrow one at a safe moment and have it
    //    load the copy while all the others run again (a patch made from a
    //    rebuild is mapped next to the program by hotload, load-near.ts; a
    //    hand-written one dlopened). The process is unchanged if this fails.
    let load: LoadOutcome = { hostThread: 0, loadMs: 0, repaired: false, hostStoppedAt: undefined, notes: [] };
    if (patchBias === undefined) {
      progress('loading the patch');
      load = readRebuild(patchElf) ? loadNear(s, rt, staged.staged, patchElf, mod, mods, opts) : loadInProcess(s, rt, staged.staged, patchFile, opts);
      patchBias = biasOf();
      if (patchBias === undefined) throw new HotloadError('PATCH_DLOPEN_FAILED', `dlopen succeeded but ${staged.staged} is not mapped in process ${pid}`);
      setNewAddresses(sites, patchBias);
    }
    // The host has done its part unless a hook needs it: let it go, so the
    // filling-in below costs it nothing. Every thread but the host runs here.
    let hostThread = load.hostThread;
    let hostPausedMs: number | undefined;
    if (meta.onApply === undefined && load.hostStoppedAt !== undefined) {
      s.resumeThread(hostThread);
      hostPausedMs = msSince(load.hostStoppedAt);
    }

    // 8. Fill in the patch's references to the target's statics and what each
    //    function ran before (for revert and status). Nothing reaches the
    //    patch's code or data yet, so the other threads keep running.
    fillIn(s, patchFile, meta, plan, sites, patchBias, mod.bias);

    // 8b. The patch's on-apply hook, if any, runs in the process now: its statics
    //     are resolved and nothing of it is live yet. Failure changes nothing.
    if (meta.onApply !== undefined) {
      progress('running the on-apply hook');
      hostThread = runHook(s, rt, hostThread, meta, patchBias, meta.onApply, 'on-apply', opts);
    }

    // 9. Stop every thread and write the prologues in one batch, all or nothing
    //    (with --wait-inactive, only at a moment no thread is inside a
    //    replaced function).
    progress('redirecting functions');
    const oldRanges = sites.map((x) => ({ name: x.name, start: mod.bias + BigInt(x.f.address), end: mod.bias + BigInt(x.f.address + Math.max(1, x.f.size)) }));
    redirect(s, pid, rt, sites, oldRanges, opts.waitInactiveMs, replacing?.writes ?? []);

    // 10. Say which replaced functions are running now (their calls finish in
    //     the old code; a main loop never takes the change): each thread is
    //     stopped on its own for a look at its stack.
    //     The patch is in: a look that fails (the process exiting meanwhile)
    //     is said in a note, never turned into a failed attach.
    progress('looking for running functions');
    let looked: ReturnType<typeof activeFunctions>;
    try {
      looked = activeFunctions(s, rt, oldRanges);
    } catch (e) {
      looked = { active: [], unknown: 0, skipped: 0, failed: e instanceof Error ? e.message : String(e) };
    }
    const times = s.close();
    // From here on, the new code runs.
    hostPausedMs ??= load.hostStoppedAt !== undefined ? msSince(load.hostStoppedAt) : 0;

    return {
      pid,
      patch: path.resolve(patchFile),
      ...(meta.description !== undefined ? { description: meta.description } : {}),
      staged: staged.staged,
      module: mod.path,
      buildId: meta.target.buildId,
      functions: sites.map((x) => ({ name: x.name, ...(demangled(x.name) !== x.name ? { demangled: demangled(x.name) } : {}), old: hex(mod.bias + BigInt(x.f.address)), new: hex(x.newAddr), previous: x.previous !== undefined ? hex(x.previous) : 'original' })),
      notes: [...plan.notes, ...load.notes, ...lookNotes(looked), ...[parentWarning(pid, meta, staged.staged)].filter((w): w is string => w !== undefined)],
      active: looked.active,
      ...(replacing ? { replaced: { patch: replacing.patch, functions: replacing.functions } } : {}),
      threads: s.threadCount,
      hostThread,
      repairedRegisters: load.repaired,
      timings: { totalMs: msSince(t0), stoppedMs: times.stoppedMs, maxStopMs: times.maxStopMs, threadStopMaxMs: times.threadStopMaxMs, threadStopSumMs: times.threadStopSumMs, loadMs: load.loadMs, hostPausedMs },
    };
  } finally {
    s.close();
  }
}

/** What loading on a borrowed thread gives back (load-near.ts and loadInProcess). */
interface LoadOutcome {
  hostThread: number;
  loadMs: number;
  repaired: boolean;
  /** When the host was stopped: it stays stopped until the caller lets it go. */
  hostStoppedAt: bigint | undefined;
  notes: string[];
}

function msSince(t: bigint): number {
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/**
 * What each function's prologue holds in the process now: NOPs, or the jump
 * of an earlier patch (stacking). Anything else was written by another tool.
 */
function readSites(s: Session, pid: number, mod: Module, plan: PatchPlan): Site[] {
  return plan.functions.map((p) => {
    const cur = readSite(s, mod.bias, p.fn);
    const padOk = cur.padBytes.equals(Buffer.alloc(PAD_BEFORE, 0x90)) || cur.target !== undefined;
    if (cur.state === 'other' || !padOk) {
      throw new HotloadError('UNPATCHABLE', `${p.old}: its prologue in process ${pid} holds unknown bytes (${cur.padBytes.toString('hex')} ${cur.entryBytes.toString('hex')}); another tool changed it`);
    }
    return {
      f: p.fn,
      name: p.old,
      pad: cur.pad,
      entrySite: cur.entrySite,
      endbr: p.fn.endbr,
      origPad: cur.padBytes,
      origEntry: cur.entryBytes,
      previous: cur.state === 'jump' ? cur.target : undefined,
      newValue: BigInt(p.newValue),
      newAddr: 0n,
      prevSlot: p.prevSlot !== undefined ? BigInt(p.prevSlot) : undefined,
    };
  });
}

/** Where the process has the staged copy mapped (its load bias), if it has. */
function loadedBias(pid: number, staged: string, patchElf: ElfFile): bigint | undefined {
  const first = readMaps(pid).find((m) => m.path === staged && m.offset === 0n);
  return first ? first.start - BigInt(patchElf.loadBase) : undefined;
}

function setNewAddresses(sites: Site[], bias: bigint): void {
  for (const site of sites) site.newAddr = bias + site.newValue;
}

/** Step 8: the patch's slots: the target's statics, each function's previous code, when and from which file it was applied. */
function fillIn(s: Session, patchFile: string, meta: ReturnType<typeof readPatch>, plan: PatchPlan, sites: Site[], patchBias: bigint, targetBias: bigint): void {
  for (const r of plan.refs) s.writeU64(patchBias + BigInt(r.slot), targetBias + BigInt(r.value));
  for (const site of sites) if (site.prevSlot !== undefined) s.writeU64(patchBias + site.prevSlot, site.previous ?? 0n);
  if (meta.appliedAtSlot !== undefined) s.writeU64(patchBias + BigInt(meta.appliedAtSlot), BigInt(Date.now()));
  if (meta.sourcePathSlot !== undefined) {
    const src = Buffer.alloc(512);
    src.write(path.resolve(patchFile).slice(0, 511), 'utf8');
    s.write(patchBias + BigInt(meta.sourcePathSlot), src);
  }
}

/**
 * Step 9: every prologue written in one batch while every thread is stopped:
 * the pads first (unreachable while the entries hold NOPs), then the entries.
 * A stacked function only gets its 8-byte address changed. A thread stopped
 * between two single-byte entry NOPs is moved past them. With
 * `waitInactiveMs`, only while no thread is inside a replaced function (each
 * look unwinds every thread while all are stopped, so the call frame
 * information is read first), looking again every 20 ms until then.
 */
function redirect(s: Session, pid: number, rt: TargetRuntime, sites: Site[], oldRanges: { name: string; start: bigint; end: bigint }[], waitInactiveMs: number | undefined, also: { write: CodeWrite; name: string }[]): void {
  const writes: CodeWrite[] = also.map((x) => x.write);
  const names: string[] = also.map((x) => x.name);
  for (const site of sites) {
    const pj = padJump(site.newAddr);
    if (site.previous !== undefined) writes.push({ addr: site.pad + BigInt(PAD_JUMP_ADDRESS), expect: site.origPad.subarray(PAD_JUMP_ADDRESS), bytes: pj.subarray(PAD_JUMP_ADDRESS) });
    else writes.push({ addr: site.pad, expect: site.origPad, bytes: pj });
    names.push(site.name);
  }
  for (const site of sites) {
    if (site.previous !== undefined) continue;
    writes.push({ addr: site.entrySite, expect: site.origEntry, bytes: entryJump(site.endbr), entry: true });
    names.push(site.name);
  }
  const batch = Session.batch(writes, names);
  if (waitInactiveMs !== undefined) {
    warmUnwind(rt.unwind);
    const until = Date.now() + waitInactiveMs;
    for (let tries = 1; ; tries++) {
      s.stopAll();
      const now = activeFunctions(s, rt, oldRanges, true);
      if (now.active.length === 0) break;
      s.resumeAllExcept(-1);
      if (Date.now() > until) {
        throw new HotloadError('FUNCTIONS_ACTIVE', `replaced functions stayed running in process ${pid} for ${waitInactiveMs} ms (${tries} looks); nothing was redirected`, { details: now.active.map(activeNote) });
      }
      sleepMs(20);
    }
  } else s.stopAll();
  s.apply(batch);
  s.resumeAllExcept(-1);
}

/**
 * Step 5b (--replace): take patch `file` out of the process in the coming
 * stop. For each of its functions in force: one the new patch replaces too
 * leaves its stack (on top: the new patch's prev slot takes what it ran
 * before, and the pad's address is the new code's; below: the patch above it
 * is linked past it) and the new patch goes on top; one the new patch does
 * not replace goes back to what it ran before, as revert does. Returns the
 * writes (each checked against the bytes read now) and what each function
 * runs afterwards.
 */
function takeOut(s: Session, pid: number, file: string, sites: Site[], mod: Module): { patch: string; writes: { write: CodeWrite; name: string }[]; functions: RevertedFunction[] } {
  const patches = loadedPatches(pid);
  const old = findLoadedPatch(patches, file);
  if (!old) throw new HotloadError('PATCH_NOT_APPLIED', `--replace ${file}: it is not loaded in process ${pid}`);
  if (old.module.path !== mod.path) throw new HotloadError('USAGE', `--replace ${file}: it patches ${old.module.path}, the new patch ${mod.path}; replace a patch of the same module`);
  if (old.meta.onRevert !== undefined) throw new HotloadError('USAGE', `--replace ${file}: it has an on-revert hook, which --replace does not run; revert it, then attach the new patch`);
  const writes: { write: CodeWrite; name: string }[] = [];
  const functions: RevertedFunction[] = [];
  const put = (addr: bigint, bytes: Buffer, name: string, entry = false) => writes.push({ write: { addr, expect: s.read(addr, bytes.length), bytes, entry }, name });
  for (const r of old.meta.replacements) {
    const st = functionState(s, old, r.old);
    if (!st) continue;
    const stack = functionStack(s, patches, st);
    const at = stack.findIndex((e) => e.patch === old && e.newName === r.new);
    if (at < 0) continue; // not in force
    const slot = prevSlotAddress(old, r.new);
    const prev = slot !== undefined ? s.readU64(slot) : 0n;
    const site = sites.find((x) => x.pad === st.pad);
    if (at > 0) {
      // Below another patch: that one's prev slot skips it.
      const above = stack[at - 1];
      const aboveSlot = prevSlotAddress(above.patch, above.newName);
      if (aboveSlot !== undefined) put(aboveSlot, u64(prev), r.old);
    } else if (site) {
      // On top, and replaced again: the new code takes its place, over what it ran before.
      site.previous = prev === 0n ? undefined : prev;
    } else if (prev === 0n) {
      put(st.entrySite, NOP2, r.old, true); // the original code runs again
    } else {
      put(st.pad + BigInt(PAD_JUMP_ADDRESS), u64(prev), r.old);
    }
    functions.push({ name: r.old, patch: old.staged, now: site ? 'the new patch' : at === 0 ? (prev === 0n ? 'original' : hex(prev)) : hex(stack[0].address) });
  }
  if (functions.length === 0) throw new HotloadError('PATCH_NOT_APPLIED', `--replace ${file}: it is loaded in process ${pid} but none of its functions is in force (reverted already)`);
  return { patch: old.source ?? old.staged, writes, functions };
}

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

/** Step 10's notes: the replaced functions still running, and what could not be looked at. */
function lookNotes(looked: ReturnType<typeof activeFunctions>): string[] {
  const n = looked.unknown;
  return [
    ...looked.active.map(activeNote),
    ...(n ? [`${n} thread${n === 1 ? '' : 's'} could not be unwound beyond the innermost frame: a replaced function deeper on ${n === 1 ? 'its' : 'their'} stack would not be seen`] : []),
    ...(looked.skipped ? [`${looked.skipped} threads were not looked at for running functions (more than 256)`] : []),
    ...(looked.failed ? [`could not look for running functions: ${looked.failed}`] : []),
  ];
}
