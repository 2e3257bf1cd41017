// The copy of a patch a debugger reads through the GDB JIT interface (gdb's
// manual, "JIT Interface"; lldb reads the same list). A debugger takes the
// addresses in such an in-memory ELF file as they are: every allocated
// section's sh_addr, every symbol's value and every address in the DWARF must
// already be the run-time one. A patch is linked at 0 and mapped at `bias`, so
// the copy has those moved by `bias`, and the DWARF fields the patch lists
// (its `.hotload.debug` table, written by mkpatch) set: an address inside the
// patch moves by `bias`, a reference to the program gets the program's address.

import { ElfFile, SHF, SHT } from './read-elf';

/** The interface's names and layouts (x86-64: pointers are 8 bytes). */
export const JIT = {
  DESCRIPTOR: '__jit_debug_descriptor',
  REGISTER: '__jit_debug_register_code',
  VERSION: 1,
  ACTION: { NONE: 0, REGISTER: 1, UNREGISTER: 2 },
  /** struct jit_descriptor { uint32 version; uint32 action_flag; entry *relevant_entry; entry *first_entry; } */
  DESC: { version: 0, action: 4, relevant: 8, first: 16, size: 24 },
  /** struct jit_code_entry { entry *next_entry; entry *prev_entry; const char *symfile_addr; uint64 symfile_size; } */
  ENTRY: { next: 0, prev: 8, addr: 16, size: 24, bytes: 32 },
} as const;

/** One address field of a debug section, as the patch lists it. */
export interface DebugField {
  section: string;
  offset: number;
  width: 4 | 8;
  /** The field's value in the debugger's copy; absent: its link-time value plus the bias. */
  value?: bigint;
}

const SYM_SIZE = 24;

/**
 * The file `elf` as it lies at `bias` in a process, for a debugger. Throws a
 * HotloadError (from the reader) for a file it cannot parse; a field outside
 * its section is an Error naming it.
 */
export function objectForDebugger(elf: ElfFile, bias: bigint, fields: DebugField[]): Buffer {
  const out = Buffer.from(elf.buf);
  const h = elf.header;
  const u64 = (at: number, add: bigint) => out.writeBigUInt64LE(BigInt.asUintN(64, out.readBigUInt64LE(at) + add), at);
  if (h.entry) u64(0x18, bias);
  for (let i = 0; i < h.phnum; i++) {
    const at = h.phoff + i * h.phentsize;
    u64(at + 0x10, bias); // p_vaddr
    u64(at + 0x18, bias); // p_paddr
  }
  const alloc = new Set(elf.sections.filter((s) => s.flags & SHF.ALLOC).map((s) => s.index));
  for (const s of elf.sections) {
    if (s.flags & SHF.ALLOC) u64(h.shoff + s.index * h.shentsize + 0x10, bias); // sh_addr
    if (s.type !== SHT.SYMTAB && s.type !== SHT.DYNSYM) continue;
    for (let at = s.offset + SYM_SIZE; at + SYM_SIZE <= s.offset + s.size; at += SYM_SIZE) {
      if (alloc.has(out.readUInt16LE(at + 6))) u64(at + 8, bias); // st_value of a symbol in a loaded section
    }
  }
  for (const f of fields) {
    const sec = elf.section(f.section);
    if (!sec || sec.type === SHT.NOBITS || f.offset < 0 || f.offset + f.width > sec.size) throw new Error(`${elf.path}: debug field ${f.section}+${f.offset} lies outside the section`);
    const at = sec.offset + f.offset;
    if (f.width === 8) out.writeBigUInt64LE(BigInt.asUintN(64, f.value ?? out.readBigUInt64LE(at) + bias), at);
    else out.writeUInt32LE(Number(BigInt.asUintN(32, f.value ?? BigInt(out.readUInt32LE(at)) + bias)), at);
  }
  return out;
}
