// Showing debuggers a patch hotload mapped itself. gdb and lldb learn of
// libraries from the loader's list, which a patch made from a rebuild is not in
// (load-near.ts maps it), and of generated code from the GDB JIT interface: a
// list of in-memory ELF files headed by `__jit_debug_descriptor` in any library
// they know of. So, on the borrowed thread, after the patch is mapped:
//
//   1. the descriptor: hotload's own library (native-shim/debug-descriptor.c,
//      no C library needed) dlopened into the process once, staged like a
//      patch; a program's own JIT list (an LLVM JIT's) is never touched;
//   2. the copy: the patch file with every address at its run-time value
//      (packages/elf/src/jit-object.ts), in an anonymous mapping of the process;
//   3. the entry (in front of the copy, same mapping) linked at the head of the
//      list by writing the process's memory. Nothing in the process reads or
//      writes the list, and no debugger is attached (hotload is the tracer),
//      so nothing needs to be told: one attaching later reads the whole list.
//
// The copy and the entry stay while the patch is mapped (revert keeps the
// mapping, and the code in it). A process without the library, or where it
// cannot be loaded, is patched all the same: the note says debuggers will not
// see the patch.

import * as fs from 'fs';
import * as path from 'path';
import { DebugField, ElfFile, JIT, objectForDebugger } from '@hotload/elf';
import { Session } from './session';
import { Module, dynamicSymbol, modules, readMaps } from './read-process';
import { stagePatch } from './stage-patch';
import { MemReader } from './read-patches';
import { TargetRuntime } from './call-in-target';

const LIBRARY = 'libhotload-debug.so';
const PROT_RW = 3n;
const MAP_PRIVATE_ANONYMOUS = 0x22n;

/** hotload's JIT descriptor library: HOTLOAD_DEBUG_LIBRARY when set, else the one built in the checkout or shipped in the package. */
export function debugLibraryPath(): string | undefined {
  const p = process.env.HOTLOAD_DEBUG_LIBRARY || path.resolve(__dirname, '../../../native-shim/build', LIBRARY);
  return fs.existsSync(p) ? p : undefined;
}

/** A call on the borrowed thread: fn(args), with `data` copied to its stack first (args may not point at it). */
type Call = (fn: bigint, data: Buffer, args: bigint[]) => bigint;

/**
 * Register the patch `patchElf`, mapped at `base`, with debuggers. Returns
 * the entry's address, or a note saying why debuggers will not see it.
 */
export function registerForDebuggers(s: Session, rt: TargetRuntime, call: Call, mods: Module[], patchElf: ElfFile, base: bigint, fields: DebugField[]): { entry?: bigint; note?: string } {
  const pid = s.pid;
  const why = (w: string) => ({ note: `debuggers will not see this patch: ${w}` });
  // What can fail without the process (files, the copy) fails into a note;
  // a call on the borrowed thread that fails is the attach's error.
  let object: Buffer;
  let desc: bigint | string | undefined;
  try {
    object = objectForDebugger(patchElf, base - BigInt(patchElf.loadBase), fields);
    desc = descriptorIn(s, pid, mods); // only hotload maps the library, under the process lock held now
  } catch (e) {
    return why((e as Error).message);
  }
  desc ??= loadDescriptor(s, rt, call);
  if (typeof desc === 'string') return why(desc);
  const size = BigInt(JIT.ENTRY.bytes + object.length);
  const at = call(rt.libc.mmap, Buffer.alloc(0), [0n, size, PROT_RW, MAP_PRIVATE_ANONYMOUS, -1n, 0n]);
  if (at <= 0n) return why(`process ${pid} could not map ${size} bytes for its debug copy`);
  const entry = Buffer.alloc(JIT.ENTRY.bytes);
  const first = s.read(desc + BigInt(JIT.DESC.first), 8).readBigUInt64LE(0);
  entry.writeBigUInt64LE(first, JIT.ENTRY.next);
  entry.writeBigUInt64LE(0n, JIT.ENTRY.prev);
  entry.writeBigUInt64LE(at + BigInt(JIT.ENTRY.bytes), JIT.ENTRY.addr);
  entry.writeBigUInt64LE(BigInt(object.length), JIT.ENTRY.size);
  s.write(at, Buffer.concat([entry, object]));
  // Link it: the old head's back pointer, then the head, then what a debugger
  // breaking on __jit_debug_register_code would read (none is attached).
  if (first !== 0n) s.writeU64(first + BigInt(JIT.ENTRY.prev), at);
  s.writeU64(desc + BigInt(JIT.DESC.first), at);
  s.writeU64(desc + BigInt(JIT.DESC.relevant), at);
  return { entry: at };
}

/** hotload's descriptor in the process, if its library is loaded. */
function descriptorIn(s: MemReader, pid: number, mods: Module[]): bigint | undefined {
  const m = mods.find((x) => path.basename(x.path).endsWith(`-${LIBRARY}`));
  if (!m) return undefined;
  const elf = ElfFile.open(`/proc/${pid}/root${m.path}`);
  const sym = dynamicSymbol(elf, JIT.DESCRIPTOR);
  if (!sym) return undefined;
  const at = m.mappings[0].start - BigInt(elf.loadBase) + BigInt(sym.value);
  return s.read(at + BigInt(JIT.DESC.version), 4).readUInt32LE(0) === JIT.VERSION ? at : undefined;
}

/** dlopen hotload's library in the process (staged like a patch); its descriptor, or why not. */
function loadDescriptor(s: Session, rt: TargetRuntime, call: Call): bigint | string {
  const lib = debugLibraryPath();
  if (!lib) return `${process.env.HOTLOAD_DEBUG_LIBRARY || LIBRARY} is missing from hotload's installation (native-shim/build)`;
  let staged: ReturnType<typeof stagePatch>;
  try {
    staged = stagePatch(s.pid, lib, fs.readFileSync(lib));
  } catch (e) {
    return `${LIBRARY} could not be staged for process ${s.pid}: ${(e as Error).message}`;
  }
  if (call(rt.dlopen, Buffer.from(staged.staged + '\0'), [0n, rt.dlopenMode]) === 0n) return `process ${s.pid} could not load ${staged.staged}`;
  try {
    return descriptorIn(s, s.pid, modules(s.pid, readMaps(s.pid))) ?? `${staged.staged} has no ${JIT.DESCRIPTOR}`;
  } catch (e) {
    return (e as Error).message;
  }
}

/** The copies in hotload's JIT list of process `pid` (none when its library is not loaded). Reads memory only. */
export function debuggerCopies(pid: number, mem: MemReader): { addr: bigint; size: bigint }[] {
  let desc: bigint | undefined;
  try {
    desc = descriptorIn(mem, pid, modules(pid, readMaps(pid)));
  } catch {
    return [];
  }
  const out: { addr: bigint; size: bigint }[] = [];
  let at = desc === undefined ? 0n : mem.read(desc + BigInt(JIT.DESC.first), 8).readBigUInt64LE(0);
  for (let guard = 0; at !== 0n && guard < 10000; guard++) {
    const e = mem.read(at, JIT.ENTRY.bytes);
    if (e.length < JIT.ENTRY.bytes) break;
    out.push({ addr: e.readBigUInt64LE(JIT.ENTRY.addr), size: e.readBigUInt64LE(JIT.ENTRY.size) });
    at = e.readBigUInt64LE(JIT.ENTRY.next);
  }
  return out;
}

/** Is the patch `patchElf` one of `copies`: a copy of its size holding its build-id where the file does? */
export function seenByDebuggers(mem: MemReader, copies: { addr: bigint; size: bigint }[], patchElf: ElfFile): boolean {
  const note = patchElf.section('.note.gnu.build-id');
  if (!note) return false;
  const want = patchElf.sectionData(note);
  return copies.some((c) => c.size === BigInt(patchElf.buf.length) && mem.read(c.addr + BigInt(note.offset), want.length).equals(want));
}
