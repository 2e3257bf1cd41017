// `hotload post`: make a build hotpatch-friendly, after linking.
//
// 1. Each function's two single-byte entry NOPs (`90 90`) become the one 2-byte
//    NOP `66 90`. A thread can then never be stopped between them, so the later
//    2-byte `jmp` written over them can never resume a thread mid-instruction.
// 2. The pad index is recorded in a non-allocated section, `.hotload.index`
//    (JSON), so later steps read it instead of recomputing it.
//
// The section is added without disturbing anything the loader uses: its bytes,
// a copy of the section-name table that names it, and a new section header table
// are appended to the end of the file, and e_shoff/e_shnum/e_shstrndx are
// updated. Program headers and every loaded byte other than the entry NOPs stay
// where they were, so the program runs exactly as before. Running it again on a
// posted file is a no-op (the file is not rewritten).

import * as fs from 'fs';
import * as path from 'path';
import { ElfFile, SHT } from './read-elf';
import { INDEX_SECTION, PadIndex, indexPads } from './index-pads';
import { NOP2, PAD_BEFORE, entryNopOffset } from '@hotload/x86';

export interface PostResult {
  /** Entries rewritten from `90 90` to `66 90` by this run. */
  rewritten: number;
  /** The file changed (false: it was already posted). */
  changed: boolean;
  index: PadIndex;
}

/** Post `buf` (the bytes of `elf`) and return the new file bytes, or undefined when nothing changes. */
export function postElf(elf: ElfFile): { bytes?: Buffer; result: PostResult } {
  const buf = Buffer.from(elf.buf); // copy: the input stays untouched
  let rewritten = 0;
  for (const f of indexPads(elf).functions) {
    if (f.pad === undefined || f.status === 'modified' || f.posted) continue;
    const off = elf.vaddrToOffset(f.pad + PAD_BEFORE + entryNopOffset(f.endbr));
    if (off === undefined) continue;
    NOP2.copy(buf, off); // 66 90: xchg %ax,%ax
    rewritten++;
  }

  const patched = new ElfFile(elf.path, buf);
  const index = indexPads(patched);
  const data = Buffer.from(JSON.stringify(index));
  const existing = patched.section(INDEX_SECTION);
  if (rewritten === 0 && existing && patched.sectionData(existing).equals(data)) {
    return { result: { rewritten, changed: false, index } };
  }
  return { bytes: appendSection(patched, INDEX_SECTION, data), result: { rewritten, changed: true, index } };
}

/** Append (or replace) a non-allocated SHT_PROGBITS section named `name`. */
export function appendSection(elf: ElfFile, name: string, data: Buffer): Buffer {
  const { shnum, shstrndx } = elf.header;
  const sht = Buffer.from(elf.slice(elf.header.shoff, shnum * 64, 'section header table'));
  const parts: Buffer[] = [elf.buf];
  let size = elf.buf.length;
  const place = (b: Buffer, align: number): number => {
    const pad = (align - (size % align)) % align;
    if (pad) parts.push(Buffer.alloc(pad));
    const off = size + pad;
    parts.push(b);
    size = off + b.length;
    return off;
  };

  const dataOff = place(data, 8);
  let headers = sht;
  let shnumNew = shnum;
  const existing = elf.section(name);
  if (existing) {
    const o = existing.index * 64;
    headers.writeBigUInt64LE(BigInt(dataOff), o + 24);
    headers.writeBigUInt64LE(BigInt(data.length), o + 32);
  } else {
    // A new name needs a section-name table that holds it: a copy with it appended.
    const oldNames = elf.sectionData(elf.sections[shstrndx]);
    const nameOff = oldNames.length;
    const names = Buffer.concat([oldNames, Buffer.from(name + '\0', 'latin1')]);
    const namesOff = place(names, 1);
    headers.writeBigUInt64LE(BigInt(namesOff), shstrndx * 64 + 24);
    headers.writeBigUInt64LE(BigInt(names.length), shstrndx * 64 + 32);
    const h = Buffer.alloc(64);
    h.writeUInt32LE(nameOff, 0); // sh_name
    h.writeUInt32LE(SHT.PROGBITS, 4); // sh_type
    // sh_flags 0 (not allocated), sh_addr 0
    h.writeBigUInt64LE(BigInt(dataOff), 24); // sh_offset
    h.writeBigUInt64LE(BigInt(data.length), 32); // sh_size
    h.writeBigUInt64LE(1n, 48); // sh_addralign
    headers = Buffer.concat([headers, h]);
    shnumNew = shnum + 1;
  }
  const shoff = place(headers, 8);
  const out = Buffer.concat(parts, size);
  out.writeBigUInt64LE(BigInt(shoff), 40); // e_shoff
  out.writeUInt16LE(shnumNew, 60); // e_shnum
  return out;
}

/** Post a file in place (atomically: a sibling temp file renamed over it). */
export function postFile(file: string): PostResult {
  const elf = ElfFile.open(file);
  const { bytes, result } = postElf(elf);
  if (bytes) writeFileAtomic(file, bytes);
  return result;
}

export function writeFileAtomic(file: string, bytes: Buffer): void {
  const mode = fs.statSync(file).mode & 0o7777;
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.hotload-${process.pid}`);
  fs.writeFileSync(tmp, bytes, { mode });
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}
