// Loading a patch made from a rebuild (mkpatch --from/--to) next to the
// program it patches. Its code keeps the compiler's 32-bit rip-relative
// references to the program's functions and data, which reach only ±2 GiB, and
// glibc's dlopen gives no way to choose where a library goes. So hotload maps
// the file itself, in a free range just below the program:
//
//   1. choose the address from /proc/PID/maps (nothing is stopped);
//   2. on a borrowed thread: open(file), one mmap per PT_LOAD segment
//      (MAP_FIXED_NOREPLACE for the first, so nothing mapped is ever replaced),
//      close(fd). The mapping is of the staged file at offset 0, so status and
//      revert see it like any other patch;
//   3. write the relocations through /proc/PID/mem while the program runs
//      (nothing refers to the patch yet): R_X86_64_RELATIVE, then the fixups,
//      each resolved in the program, a shared library, or for new data the
//      oldest loaded patch of the same program that has it (so a static added
//      by an earlier patch keeps its value).
//   4. on the borrowed thread again: register the unwind tables with libgcc
//      (exceptions and backtraces pass through the patch), and the patch's
//      debug copy with debuggers (debug-register.ts).
// Any failure after the mmap unmaps the range again. The patch is not in the
// loader's list (dladdr and dl_iterate_phdr do not see it); it has no
// constructors or thread-locals.

import { HotloadError } from '@hotload/errors';
import { DebugField, ElfFile, PF, PT, R_X86_64, STT, perFile } from '@hotload/elf';
import { FIXUP_KIND, RebuildInfo, readRebuild } from '@hotload/patch';
import { Session } from './session';
import { anyPart } from './native';
import { Mapping, Module, dynamicSymbol, hex, openModule, readMaps, setBias } from './read-process';
import { TargetRuntime, callOnHost, stopAndChooseHost } from './call-in-target';
import { loadedPatches } from './read-patches';
import { isStaged } from './stage-patch';
import { registerForDebuggers } from './debug-register';

const PAGE = 4096n;
const REACH = 2n ** 31n - 2n ** 20n; // what a rel32 reaches, less a margin
const PROT = { R: 1n, W: 2n, X: 4n };
const MAP_PRIVATE = 0x02n;
const MAP_FIXED = 0x10n;
const MAP_FIXED_NOREPLACE = 0x100000n;
const O_RDONLY_CLOEXEC = 0o2000000n;

const down = (n: bigint) => n & ~(PAGE - 1n);
const up = (n: bigint) => (n + PAGE - 1n) & ~(PAGE - 1n);

interface Segment {
  vaddr: bigint;
  offset: bigint;
  len: bigint;
  prot: bigint;
}

function segments(elf: ElfFile): { segs: Segment[]; span: bigint } {
  const loads = elf.programs.filter((p) => p.type === PT.LOAD);
  if (loads.length === 0 || loads[0].vaddr !== 0 || loads[0].offset !== 0) throw new HotloadError('PATCH_BAD', `${elf.path}: its first segment is not at address and offset 0`);
  const segs: Segment[] = [];
  let span = 0n;
  for (const p of loads) {
    if (p.memsz > p.filesz) throw new HotloadError('PATCH_BAD', `${elf.path}: a segment has zero-filled memory (.bss); rebuilt patches carry none`);
    const start = down(BigInt(p.vaddr));
    const end = up(BigInt(p.vaddr + p.memsz));
    const prot = (p.flags & PF.R ? PROT.R : 0n) | (p.flags & PF.W ? PROT.W : 0n) | (p.flags & PF.X ? PROT.X : 0n);
    segs.push({ vaddr: start, offset: down(BigInt(p.offset)), len: end - start, prot });
    if (end > span) span = end;
  }
  return { segs, span };
}

/** A free range of `span` bytes within reach of [lo, hi): below the module if possible, else above it. */
export function chooseAddress(maps: Mapping[], lo: bigint, hi: bigint, span: bigint): bigint | undefined {
  const sorted = [...maps].sort((a, b) => (a.start < b.start ? -1 : 1));
  const free = (a: bigint) => a >= 0x10000n && sorted.every((m) => a + span <= m.start || a >= m.end);
  // Below: the highest free start under lo, one page of gap.
  const minBelow = hi - REACH;
  let cand = down(lo - span - PAGE);
  for (let i = 0; i < 4096 && cand >= minBelow && cand > 0n; i++) {
    if (free(cand)) return cand;
    const blocker = sorted.filter((m) => cand < m.end && cand + span > m.start).reduce((a, m) => (m.start < a ? m.start : a), cand);
    cand = down(blocker - span - PAGE);
  }
  // Above: as far from the heap as reach allows, coming down.
  cand = down(lo + REACH - span);
  for (let i = 0; i < 4096 && cand >= hi; i++) {
    if (free(cand)) return cand;
    const blocker = sorted.filter((m) => cand < m.end && cand + span > m.start).reduce((a, m) => (m.start < a ? m.start : a), cand);
    cand = down(blocker - span - PAGE);
  }
  return undefined;
}

/**
 * Find a symbol by name in the process's shared libraries (default versions
 * first). For a GNU indirect function (glibc's strlen, memcpy, strspn, ...) the
 * symbol is its resolver; `ifunc` says the resolver must be called for the
 * implementation's address.
 */
function librarySymbol(pid: number, mods: Module[], name: string): { addr: bigint; ifunc: boolean } | undefined {
  for (const m of mods.slice(1)) {
    if (isStaged(m.path)) continue;
    let elf: ElfFile;
    try {
      elf = openModule(pid, m);
      setBias(m, elf);
    } catch {
      continue;
    }
    const s = dynamicSymbol(elf, name);
    if (s && s.bind !== 0) return { addr: m.bias + BigInt(s.value), ifunc: s.type === STT.GNU_IFUNC };
  }
  return undefined;
}

export interface NearLoad {
  base: bigint;
  hostThread: number;
  loadMs: number;
  repaired: boolean;
  hostStoppedAt: bigint;
  /** What the user should know: debuggers will not see the patch, and why. */
  notes: string[];
}

/**
 * Map a rebuilt patch next to `mod` and relocate it. Returns with the host
 * stopped and every other thread running (as loadInProcess does).
 */
export function loadNear(
  s: Session,
  rt: TargetRuntime,
  file: string,
  patchElf: ElfFile,
  mod: Module,
  mods: Module[],
  opts: { safePointTimeoutMs?: number; callTimeoutMs?: number },
): NearLoad {
  const pid = s.pid;
  const rb = readRebuild(patchElf)!;
  const { segs, span } = segments(patchElf);
  const dyn = patchElf.relocations('.rela.dyn');
  const bad = dyn.filter((r) => r.type !== R_X86_64.RELATIVE);
  if (bad.length) throw new HotloadError('PATCH_BAD', `${patchElf.path}: dynamic relocation type ${bad[0].type}; a rebuilt patch has only R_X86_64_RELATIVE`);

  // Resolve every reference before touching the process.
  const labels = labelsOf(patchElf);
  const unresolved: string[] = [];
  const libs = new Map<string, bigint>();
  const resolvers = new Map<string, bigint>();
  for (const r of rb.info.refs) {
    if (r.how !== 'lib') continue;
    const a = librarySymbol(pid, mods, r.name);
    if (a?.ifunc) resolvers.set(r.name, a.addr);
    else if (a !== undefined) libs.set(r.name, a.addr);
    else if (r.weak) libs.set(r.name, 0n);
    else unresolved.push(`${r.name}: not defined by any library of process ${pid}`);
  }
  for (const r of rb.info.refs) if (r.how === 'data' && !labels.has(r.label)) unresolved.push(`${r.key}: its label ${r.label} is missing from the patch`);
  // Unwind tables go to libgcc's registry, so exceptions and backtraces pass through the patch.
  const eh = rb.info.ehFrame;
  let registerFrame: bigint | undefined;
  if (eh) {
    registerFrame = librarySymbol(pid, mods, '__register_frame')?.addr;
    if (!labels.has(eh.label)) unresolved.push(`its unwind tables (${eh.label}) are missing from the patch`);
    else if (registerFrame === undefined && eh.personality) {
      unresolved.push('__register_frame: the process has no libgcc_s to register the patch\'s unwind tables with, and its C++ code needs them for exceptions');
    }
  }
  if (unresolved.length) throw new HotloadError('PATCH_UNRESOLVED', `${patchElf.path}: ${unresolved.length} symbol${unresolved.length === 1 ? '' : 's'} do not resolve in process ${pid}`, { details: unresolved });
  const owners = dataOwners(pid, mod, patchElf.path);

  const lo = mod.mappings.reduce((a, m) => (m.start < a ? m.start : a), mod.mappings[0].start);
  const hi = mod.mappings.reduce((a, m) => (m.end > a ? m.end : a), 0n);
  const place = () => {
    const at = chooseAddress(readMaps(pid), lo, hi, span);
    if (at === undefined) throw new HotloadError('PATCH_NO_ROOM', `no free ${span} bytes within 2 GiB of ${mod.path} in process ${pid}`);
    return at;
  };
  let base = place();

  const callMs = opts.callTimeoutMs ?? 10000;
  const host = stopAndChooseHost(s, rt, opts.safePointTimeoutMs ?? 3000);
  const hostStoppedAt = process.hrtime.bigint();
  const t0 = process.hrtime.bigint();
  let repaired = false;
  const call = (fn: bigint, data: Buffer, args: bigint[]) => {
    const r = callOnHost(s, rt, host.tid, fn, data, args, callMs);
    repaired ||= anyPart(r.repaired);
    return BigInt.asIntN(64, r.value);
  };
  // Indirect functions: ask each resolver for the implementation this CPU uses,
  // as the loader would (x86-64 resolvers take no arguments).
  for (const [name, resolver] of resolvers) {
    const impl = call(resolver, Buffer.alloc(0), []);
    if (impl <= 0n) {
      s.resumeAllExcept(-1);
      throw new HotloadError('PATCH_UNRESOLVED', `${name}: its resolver in process ${pid} returned no implementation`);
    }
    libs.set(name, impl);
  }
  const fd = call(rt.libc.open, Buffer.from(file + '\0'), [0n, O_RDONLY_CLOEXEC]);
  if (fd < 0n) {
    s.resumeAllExcept(-1);
    throw new HotloadError('PATCH_DLOPEN_FAILED', `process ${pid} could not open ${file}`);
  }
  let mapped = false;
  let fdOpen = true;
  try {
    // The other threads run meanwhile and may map memory too: if the range was
    // taken since maps was read (mmap fails, EEXIST), choose again.
    let first = -1n;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (attempt > 0) base = place();
      first = call(rt.libc.mmap, Buffer.alloc(0), [base, span, segs[0].prot, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0n]);
      if (first !== -1n) break;
    }
    if (first !== base) {
      // An old kernel takes MAP_FIXED_NOREPLACE as a hint and maps elsewhere.
      if (first > 0n) call(rt.libc.munmap, Buffer.alloc(0), [first, span]);
      throw new HotloadError('PATCH_NO_ROOM', `process ${pid} could not map the patch near ${mod.path} (last try at ${hex(base)}: mmap returned ${first === -1n ? 'MAP_FAILED' : hex(first)})`);
    }
    mapped = true;
    for (const seg of segs.slice(1)) {
      const r = call(rt.libc.mmap, Buffer.alloc(0), [base + seg.vaddr, seg.len, seg.prot, MAP_PRIVATE | MAP_FIXED, fd, seg.offset]);
      if (r !== base + seg.vaddr) throw new HotloadError('PATCH_DLOPEN_FAILED', `process ${pid} could not map a segment of the patch (mmap returned ${r})`);
    }
    call(rt.libc.close, Buffer.alloc(0), [fd]);
    fdOpen = false;
    const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
    s.resumeAllExcept(host.tid);

    // Relocate while every thread but the host runs: nothing refers to the patch
    // yet. The fields are gathered page by page and each page written once (a
    // write per field took most of the host's pause for a large patch).
    const pages = new PageWriter(s);
    for (const r of dyn) pages.u64(base + BigInt(r.offset), base + r.addend);
    const bases = new Map<number, bigint>();
    const baseOf = (i: number): bigint => {
      let v = bases.get(i);
      if (v !== undefined) return v;
      const r = rb.info.refs[i];
      if (r.how === 'target') {
        v = r.got === undefined ? mod.bias + BigInt(r.value) : s.read(mod.bias + BigInt(r.got), 8).readBigUInt64LE(0) - BigInt(r.symOff ?? 0);
      } else if (r.how === 'lib') v = libs.get(r.name)!;
      else {
        const owner = owners.get(`${r.key}/${r.size}`);
        v = (owner ?? base + labels.get(r.label)! + BigInt(r.objOff)) - BigInt(r.objOff);
      }
      bases.set(i, v);
      return v;
    };
    for (const f of rb.fixups) {
      const at = base + BigInt(f.at);
      const value = baseOf(f.ref) + f.addend;
      if (f.kind === FIXUP_KIND.ABS64) {
        pages.u64(at, BigInt.asUintN(64, value));
        continue;
      }
      const rel = value - at;
      if (rel < -(2n ** 31n) || rel >= 2n ** 31n) {
        throw new HotloadError('PATCH_NO_ROOM', `a reference of the patch to ${describeRef(rb.info, f.ref)} does not reach (${hex(at)} -> ${hex(value)})`);
      }
      pages.i32(at, Number(rel));
    }
    pages.flush();
    if (eh && registerFrame !== undefined) {
      // The linker puts the records at the start of .eh_frame (older patches: at their label).
      const ehAt = patchElf.section('.eh_frame')?.addr ?? Number(labels.get(eh.label)!);
      callOnHost(s, rt, host.tid, registerFrame, Buffer.alloc(0), [base + BigInt(ehAt)], callMs);
    }
    // Debuggers: a copy of the file with run-time addresses, in the GDB JIT list.
    const notes: string[] = [];
    if (rb.info.debug) {
      const fields: DebugField[] = rb.debug.map((f) => ({ section: f.section, offset: f.offset, width: 8, ...(f.ref !== undefined ? { value: BigInt.asUintN(64, baseOf(f.ref) + f.addend) } : {}) }));
      const r = registerForDebuggers(s, rt, call, mods, patchElf, base, fields);
      if (r.note) notes.push(r.note);
    }
    return { base, hostThread: host.tid, loadMs, repaired, hostStoppedAt, notes };
  } catch (e) {
    try {
      // The host is stopped unless a call timed out (then it is still busy and cannot help).
      if (mapped) callOnHost(s, rt, host.tid, rt.libc.munmap, Buffer.alloc(0), [base, span], callMs);
      if (fdOpen) callOnHost(s, rt, host.tid, rt.libc.close, Buffer.alloc(0), [fd], callMs);
    } catch {
      /* the process keeps an unused mapping; the error below is the one to report */
    }
    s.resumeAllExcept(-1);
    throw e;
  }
}

function describeRef(info: RebuildInfo, i: number): string {
  const r = info.refs[i];
  return r.how === 'data' ? r.key : r.name;
}

/** A rebuilt patch's labels (`hl.*`: its sections, its data), by name; once per file (every later patch of a watch looks at the earlier ones). */
const labelsOf = perFile((elf) => new Map(elf.symbols('.symtab').filter((x) => x.name.startsWith('hl.')).map((x) => [x.name, BigInt(x.value)])));

/**
 * New data added by rebuilt patches already loaded for the same program, by
 * "key/size": the oldest patch that has it owns it (later ones were pointed
 * at that copy when they were loaded).
 */
function dataOwners(pid: number, mod: Module, self: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  const loaded = loadedPatches(pid)
    .filter((p) => p.module.path === mod.path && p.staged !== self)
    .sort((a, b) => (a.appliedAt ?? Infinity) - (b.appliedAt ?? Infinity));
  for (const p of loaded) {
    const rb = readRebuild(ElfFile.open(p.file));
    if (!rb) continue;
    const labels = labelsOf(ElfFile.open(p.file));
    for (const d of rb.info.data) {
      const k = `${d.key}/${d.size}`;
      const l = labels.get(d.label);
      if (!out.has(k) && l !== undefined) out.set(k, p.bias + l + BigInt(d.objOff));
    }
  }
  return out;
}

/** Writes into a process's memory gathered per page: each page read once and written once. */
class PageWriter {
  private readonly pages = new Map<bigint, Buffer>();
  constructor(private readonly s: Session) {}

  private put(at: bigint, bytes: Buffer): void {
    for (let i = 0; i < bytes.length; ) {
      const a = at + BigInt(i);
      const page = a & ~4095n;
      let buf = this.pages.get(page);
      if (!buf) {
        buf = this.s.read(page, 4096);
        this.pages.set(page, buf);
      }
      const off = Number(a - page);
      const n = Math.min(bytes.length - i, 4096 - off);
      bytes.copy(buf, off, i, i + n);
      i += n;
    }
  }

  u64(at: bigint, v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    this.put(at, b);
  }

  i32(at: bigint, v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.put(at, b);
  }

  flush(): void {
    for (const [page, buf] of this.pages) this.s.write(page, buf);
    this.pages.clear();
  }
}
