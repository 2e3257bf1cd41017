// Typed reading of ELF64 little-endian x86-64 files: header, program headers,
// sections, symbols (.symtab, .dynsym with GNU symbol versions), notes
// (GNU build-id), the dynamic section and RELA relocations.
//
// The ELF file header comes from `elfy` (the design card's choice). elfy reads
// the ELF64 section header's sh_addralign and sh_entsize from offsets 46 and 54
// instead of 48 and 56 and has no symbol parsing, so everything below the file
// header is read here, each field at the offset of the System V gABI
// (Elf64_Shdr: name 0, type 4, flags 8, addr 16, offset 24, size 32, link 40,
// info 44, addralign 48, entsize 56). Tests compare against `readelf`.
//
// Every read is bounds-checked and a bad file gives a HotloadError naming the
// file and the field, never a RangeError from inside a Buffer.

import * as fs from 'fs';
import * as zlib from 'zlib';
import { HotloadError } from '@hotload/errors';
// elfy ships no types; its Parser.parseHeader is all we take from it.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const elfy = require('elfy') as { Parser: new () => { parseHeader(buf: Buffer): ElfyHeader } };

interface ElfyHeader {
  class: string;
  endian: string;
  type: string | undefined;
  machine: string | undefined;
  entry: number;
  phoff: number;
  shoff: number;
  flags: number;
  ehsize: number;
  phentsize: number;
  phnum: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

export const SHT = { NULL: 0, PROGBITS: 1, SYMTAB: 2, STRTAB: 3, RELA: 4, NOTE: 7, NOBITS: 8, DYNSYM: 11, GNU_VERSYM: 0x6fffffff, GNU_VERDEF: 0x6ffffffd } as const;
export const SHF = { WRITE: 1, ALLOC: 2, EXECINSTR: 4, COMPRESSED: 0x800 } as const;
/** Elf64_Chdr.ch_type of an SHF_COMPRESSED section. */
export const ELFCOMPRESS = { ZLIB: 1, ZSTD: 2 } as const;
/** sizeof(Elf64_Chdr): type 0, reserved 4, size 8, addralign 16. */
const CHDR_SIZE = 24;
export const PT = { LOAD: 1, DYNAMIC: 2, NOTE: 4, GNU_STACK: 0x6474e551 } as const;
export const PF = { X: 1, W: 2, R: 4 } as const;
export const STT = { NOTYPE: 0, OBJECT: 1, FUNC: 2, SECTION: 3, FILE: 4, TLS: 6, GNU_IFUNC: 10 } as const;
export const STB = { LOCAL: 0, GLOBAL: 1, WEAK: 2 } as const;
export const ET = { EXEC: 2, DYN: 3 } as const;
export const DT = { NULL: 0, NEEDED: 1, STRTAB: 5, SYMTAB: 6, SONAME: 14, FLAGS_1: 0x6ffffffb } as const;
const EM_X86_64 = 62;

export interface ElfHeader {
  type: number; // ET_*
  machine: number;
  entry: number;
  phoff: number;
  shoff: number;
  phentsize: number;
  phnum: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

export interface ProgramHeader {
  type: number;
  flags: number;
  offset: number;
  vaddr: number;
  paddr: number;
  filesz: number;
  memsz: number;
  align: number;
}

export interface Section {
  index: number;
  name: string;
  type: number;
  flags: number;
  addr: number;
  offset: number;
  size: number;
  link: number;
  info: number;
  addralign: number;
  entsize: number;
}

export interface ElfSymbol {
  name: string;
  value: number;
  size: number;
  type: number; // STT_*
  bind: number; // STB_*
  visibility: number;
  shndx: number;
  /** GNU symbol version (`.dynsym` only), e.g. "GLIBC_2.34"; hidden versions too. */
  version?: string;
  /** The name of the nearest preceding STT_FILE symbol (`.symtab` locals). */
  file?: string;
}

export interface Rela {
  offset: number;
  type: number;
  sym: number;
  addend: bigint;
}

export interface DynEntry {
  tag: number;
  value: bigint;
}

export interface Note {
  name: string;
  type: number;
  desc: Buffer;
}

/** ElfFile.open's files, least recently used first, within these bounds. */
const openCache = new Map<string, ElfFile>();
const OPEN_CACHE_FILES = 512;
const OPEN_CACHE_BYTES = 512 << 20;
let openBytes = 0;

/**
 * `compute` answered once per ElfFile and kept as long as the file is (an
 * undefined answer too): what hotload reads from a file (its pad index, its
 * exports, a patch's metadata) is read again each time a watch or a rollout
 * opens it, and ElfFile.open gives the same ElfFile for a file not changed.
 */
export function perFile<T>(compute: (elf: ElfFile) => T): (elf: ElfFile) => T {
  const answers = new WeakMap<ElfFile, { value: T }>();
  return (elf) => {
    let a = answers.get(elf);
    if (!a) answers.set(elf, (a = { value: compute(elf) }));
    return a.value;
  };
}

export class ElfFile {
  readonly header: ElfHeader;
  readonly programs: ProgramHeader[];
  readonly sections: Section[];
  private symCache = new Map<string, ElfSymbol[]>();

  /** Parse `buf`; `path` only names the file in errors. */
  constructor(readonly path: string, readonly buf: Buffer) {
    this.header = this.readHeader();
    this.programs = this.readPrograms();
    this.sections = this.readSections();
  }

  /**
   * The file at `path`, parsed. A file opened before and not changed since
   * (same device, inode, size, change and modification times) is the same
   * ElfFile, with the symbols, DWARF and indexes already read from it: watch
   * and rollouts open the same programs, libraries and objects again and again.
   */
  static open(path: string): ElfFile {
    let st: fs.BigIntStats | undefined;
    try {
      st = fs.statSync(path, { bigint: true });
    } catch {
      st = undefined; // readFileSync below says why
    }
    const key = st && st.isFile() ? `${path}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : undefined;
    const hit = key !== undefined ? openCache.get(key) : undefined;
    if (hit) {
      openCache.delete(key!); // most recently used last
      openCache.set(key!, hit);
      return hit;
    }
    const elf = ElfFile.read(path);
    if (key !== undefined) {
      openCache.set(key, elf);
      openBytes += elf.buf.length;
      for (const [k, e] of openCache) {
        if (openCache.size <= OPEN_CACHE_FILES && openBytes <= OPEN_CACHE_BYTES) break;
        openCache.delete(k);
        openBytes -= e.buf.length;
      }
    }
    return elf;
  }

  private static read(path: string): ElfFile {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(path);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') throw new HotloadError('FILE_NOT_FOUND', `${path}: no such file`);
      if (err.code === 'EISDIR') throw new HotloadError('ELF_NOT_ELF', `${path}: is a directory`);
      throw new HotloadError('FILE_UNREADABLE', `${path}: ${err.message}`);
    }
    return new ElfFile(path, buf);
  }

  get isPie(): boolean {
    return this.header.type === ET.DYN;
  }

  // ---- bounds-checked primitives -------------------------------------------------

  private malformed(what: string): never {
    throw new HotloadError('ELF_MALFORMED', `${this.path}: ${what}`);
  }

  /** A view of [off, off+len) of the file; an error naming `what` if outside it. */
  slice(off: number, len: number, what: string): Buffer {
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0 || off + len > this.buf.length) {
      this.malformed(`${what} lies outside the file (offset ${off}, ${len} bytes, file is ${this.buf.length} bytes)`);
    }
    return this.buf.subarray(off, off + len);
  }

  /** A 64-bit field as a number (two 32-bit reads: no BigInt per field). */
  private u64(b: Buffer, off: number): number {
    const hi = b.readUInt32LE(off + 4);
    if (hi >= 0x200000) return Number.MAX_SAFE_INTEGER; // beyond 2^53: caught by slice() where it matters
    return hi * 0x100000000 + b.readUInt32LE(off);
  }

  // ---- header, program headers, sections ----------------------------------------

  private readHeader(): ElfHeader {
    const b = this.buf;
    if (b.length < 4 || b[0] !== 0x7f || b[1] !== 0x45 || b[2] !== 0x4c || b[3] !== 0x46) {
      throw new HotloadError('ELF_NOT_ELF', `${this.path}: not an ELF file (no \\x7fELF magic)`);
    }
    if (b.length < 64) this.malformed(`truncated ELF header (${b.length} bytes, need 64)`);
    if (b[4] !== 2) throw new HotloadError('ELF_UNSUPPORTED', `${this.path}: ${b[4] === 1 ? '32-bit' : `unknown class ${b[4]}`} ELF; only ELF64 is supported`);
    if (b[5] !== 1) throw new HotloadError('ELF_UNSUPPORTED', `${this.path}: ${b[5] === 2 ? 'big-endian' : `unknown data encoding ${b[5]}`} ELF; only little-endian is supported`);
    const h = new elfy.Parser().parseHeader(b);
    const machine = b.readUInt16LE(18); // elfy maps it to a name; keep the number
    if (machine !== EM_X86_64) throw new HotloadError('ELF_UNSUPPORTED', `${this.path}: machine ${h.machine ?? machine} is not x86-64`);
    const type = b.readUInt16LE(16);
    if (h.phnum > 0 && h.phentsize !== 56) this.malformed(`e_phentsize is ${h.phentsize}, expected 56`);
    if (h.shnum > 0 && h.shentsize !== 64) this.malformed(`e_shentsize is ${h.shentsize}, expected 64`);
    return {
      type,
      machine,
      entry: h.entry,
      phoff: h.phoff,
      shoff: h.shoff,
      phentsize: h.phentsize,
      phnum: h.phnum,
      shentsize: h.shentsize,
      shnum: h.shnum,
      shstrndx: h.shstrndx,
    };
  }

  private readPrograms(): ProgramHeader[] {
    const { phoff, phnum } = this.header;
    if (phnum === 0) return [];
    const t = this.slice(phoff, phnum * 56, 'program header table');
    const out: ProgramHeader[] = [];
    for (let i = 0; i < phnum; i++) {
      const o = i * 56;
      out.push({
        type: t.readUInt32LE(o),
        flags: t.readUInt32LE(o + 4),
        offset: this.u64(t, o + 8),
        vaddr: this.u64(t, o + 16),
        paddr: this.u64(t, o + 24),
        filesz: this.u64(t, o + 32),
        memsz: this.u64(t, o + 40),
        align: this.u64(t, o + 48),
      });
    }
    return out;
  }

  private readSections(): Section[] {
    const { shoff, shnum, shstrndx } = this.header;
    if (shnum === 0) return [];
    const t = this.slice(shoff, shnum * 64, 'section header table');
    const out: Section[] = [];
    for (let i = 0; i < shnum; i++) {
      const o = i * 64;
      out.push({
        index: i,
        name: '',
        type: t.readUInt32LE(o + 4),
        flags: this.u64(t, o + 8),
        addr: this.u64(t, o + 16),
        offset: this.u64(t, o + 24),
        size: this.u64(t, o + 32),
        link: t.readUInt32LE(o + 40),
        info: t.readUInt32LE(o + 44),
        addralign: this.u64(t, o + 48),
        entsize: this.u64(t, o + 56),
      });
      (out[i] as Section & { nameOff: number }).nameOff = t.readUInt32LE(o);
    }
    if (shstrndx >= shnum) this.malformed(`e_shstrndx ${shstrndx} is not a section (there are ${shnum})`);
    const strtab = this.sectionData(out[shstrndx]);
    for (const s of out) {
      const x = s as Section & { nameOff?: number };
      s.name = this.cstring(strtab, x.nameOff ?? 0, 'section name');
      delete x.nameOff;
    }
    return out;
  }

  private cstring(tab: Buffer, off: number, what: string): string {
    if (off >= tab.length) {
      if (off === 0) return '';
      this.malformed(`${what} offset ${off} is outside its string table`);
    }
    const end = tab.indexOf(0, off);
    return tab.toString('latin1', off, end < 0 ? tab.length : end);
  }

  /** The bytes of a section in the file (empty for SHT_NOBITS). */
  sectionData(s: Section): Buffer {
    if (s.type === SHT.NOBITS || s.type === SHT.NULL) return Buffer.alloc(0);
    return this.slice(s.offset, s.size, `section ${s.name || '#' + s.index}`);
  }

  /**
   * A section's contents as the program sees them: an SHF_COMPRESSED section
   * (debug sections of a `-gz` build) inflated. zstd needs a Node with
   * zlib.zstdDecompressSync (22.15 and later); without it, a named error.
   */
  sectionContents(s: Section): Buffer {
    const raw = this.sectionData(s);
    if (!(s.flags & SHF.COMPRESSED)) return raw;
    if (raw.length < CHDR_SIZE) this.malformed(`compressed section ${s.name} has no header`);
    const type = raw.readUInt32LE(0);
    const size = Number(raw.readBigUInt64LE(8));
    const body = raw.subarray(CHDR_SIZE);
    let out: Buffer;
    try {
      if (type === ELFCOMPRESS.ZLIB) out = zlib.inflateSync(body);
      else if (type === ELFCOMPRESS.ZSTD && typeof (zlib as { zstdDecompressSync?: unknown }).zstdDecompressSync === 'function') out = (zlib as unknown as { zstdDecompressSync(b: Buffer): Buffer }).zstdDecompressSync(body);
      else
        throw new HotloadError('ELF_UNSUPPORTED', `${this.path}: section ${s.name} is compressed with ${type === ELFCOMPRESS.ZSTD ? 'zstd, which this Node cannot inflate' : `an unknown method (${type})`}`, {
          hint: 'Build with -gz=zlib, or without -gz.',
        });
    } catch (e) {
      if (e instanceof HotloadError) throw e;
      this.malformed(`compressed section ${s.name} does not inflate: ${(e as Error).message}`);
    }
    if (out.length !== size) this.malformed(`compressed section ${s.name} inflates to ${out.length} bytes, its header says ${size}`);
    return out;
  }

  section(name: string): Section | undefined {
    return this.sections.find((s) => s.name === name);
  }

  // ---- addresses -------------------------------------------------------------------

  /** File offset of a virtual address inside a PT_LOAD segment's file bytes. */
  vaddrToOffset(addr: number): number | undefined {
    const last = this.lastSegment; // callers ask about nearby addresses, many times over
    if (last && addr >= last.vaddr && addr < last.vaddr + last.filesz) return last.offset + (addr - last.vaddr);
    for (const p of this.programs) {
      if (p.type === PT.LOAD && addr >= p.vaddr && addr < p.vaddr + p.filesz) {
        this.lastSegment = p;
        return p.offset + (addr - p.vaddr);
      }
    }
    return undefined;
  }
  private lastSegment?: ProgramHeader;

  /** The NUL-terminated string at a virtual address, or undefined when none ends inside the file. */
  stringAt(addr: number): string | undefined {
    const off = this.vaddrToOffset(addr);
    if (off === undefined) return undefined;
    const end = this.buf.indexOf(0, off);
    return end < 0 ? undefined : this.buf.toString('utf8', off, end);
  }

  /** Lowest PT_LOAD vaddr, rounded down to a page: the base that load bias is added to. */
  get loadBase(): number {
    const loads = this.programs.filter((p) => p.type === PT.LOAD);
    if (loads.length === 0) return 0;
    return Math.min(...loads.map((p) => p.vaddr - (p.vaddr % 4096)));
  }

  // ---- symbols -----------------------------------------------------------------------

  /** Symbols of `.symtab` or `.dynsym` (empty when the file has none). */
  symbols(which: '.symtab' | '.dynsym'): ElfSymbol[] {
    const cached = this.symCache.get(which);
    if (cached) return cached;
    const sec = this.sections.find((s) => s.type === (which === '.symtab' ? SHT.SYMTAB : SHT.DYNSYM));
    const out: ElfSymbol[] = [];
    if (sec) {
      if (sec.entsize !== 24) this.malformed(`${sec.name} has entry size ${sec.entsize}, expected 24`);
      if (sec.link >= this.sections.length) this.malformed(`${sec.name} links to missing string table ${sec.link}`);
      const data = this.sectionData(sec);
      // One string for the whole table: slicing it per name is far cheaper than
      // decoding each name from the buffer (100,000 symbols in a large program).
      const strtab = this.sectionData(this.sections[sec.link]).toString('latin1');
      const versions = which === '.dynsym' ? this.symbolVersions() : undefined;
      const n = Math.floor(data.length / 24);
      let file: string | undefined;
      for (let i = 0; i < n; i++) {
        const o = i * 24;
        const info = data[o + 4];
        const nameOff = data.readUInt32LE(o);
        if (nameOff >= strtab.length && nameOff !== 0) this.malformed(`name of symbol ${i} in ${sec.name} is outside its string table`);
        const nameEnd = strtab.indexOf('\0', nameOff);
        const sym: ElfSymbol = {
          name: nameOff === 0 ? '' : strtab.slice(nameOff, nameEnd < 0 ? strtab.length : nameEnd),
          type: info & 0xf,
          bind: info >> 4,
          visibility: data[o + 5] & 3,
          shndx: data.readUInt16LE(o + 6),
          value: this.u64(data, o + 8),
          size: this.u64(data, o + 16),
          // Both always present (maybe undefined): one object shape for every symbol.
          version: versions ? versions[i] : undefined,
          file: undefined,
        };
        if (sym.type === STT.FILE) file = sym.name;
        else if (sym.bind === STB.LOCAL && file) sym.file = file;
        out.push(sym);
      }
    }
    this.symCache.set(which, out);
    return out;
  }

  /** Version names for `.dynsym` entries (index -> name), from .gnu.version and verdef/verneed. */
  private symbolVersions(): (string | undefined)[] | undefined {
    const versym = this.sections.find((s) => s.type === SHT.GNU_VERSYM);
    if (!versym) return undefined;
    const names = new Map<number, string>();
    for (const s of this.sections) {
      if (s.type !== 0x6ffffffd && s.type !== 0x6ffffffe) continue; // SHT_GNU_verdef / verneed
      if (s.link >= this.sections.length) continue;
      const d = this.sectionData(s);
      const str = this.sectionData(this.sections[s.link]);
      let off = 0;
      for (let i = 0; i < s.info && off + 16 <= d.length; i++) {
        if (s.type === 0x6ffffffd) {
          // Elf64_Verdef: version 0, flags 2, ndx 4, cnt 6, hash 8, aux 12, next 16
          const ndx = d.readUInt16LE(off + 4);
          const aux = d.readUInt32LE(off + 12);
          if (off + aux + 8 <= d.length) names.set(ndx, this.cstring(str, d.readUInt32LE(off + aux), 'version name'));
          const next = d.readUInt32LE(off + 16);
          if (next === 0) break;
          off += next;
        } else {
          // Elf64_Verneed: version 0, cnt 2, file 4, aux 8, next 12; Vernaux: hash 0, flags 4, other 6, name 8, next 12
          const cnt = d.readUInt16LE(off + 2);
          let a = off + d.readUInt32LE(off + 8);
          for (let j = 0; j < cnt && a + 16 <= d.length; j++) {
            names.set(d.readUInt16LE(a + 6), this.cstring(str, d.readUInt32LE(a + 8), 'version name'));
            const nx = d.readUInt32LE(a + 12);
            if (nx === 0) break;
            a += nx;
          }
          const next = d.readUInt32LE(off + 12);
          if (next === 0) break;
          off += next;
        }
      }
    }
    const vd = this.sectionData(versym);
    const out: (string | undefined)[] = [];
    for (let i = 0; i + 2 <= vd.length; i += 2) {
      const v = vd.readUInt16LE(i) & 0x7fff;
      out.push(v > 1 ? names.get(v) : undefined);
    }
    return out;
  }

  /**
   * The defined function symbols (STT_FUNC/IFUNC) of .symtab (else .dynsym) as
   * columns, without an object per symbol: the pad index reads 100,000 of them.
   * `file` is the index into `files` of the STT_FILE a local follows (-1: none).
   */
  functionColumns(): { n: number; value: Float64Array; size: Float64Array; local: Uint8Array; file: Int32Array; files: string[]; name(i: number): string } {
    let sec = this.sections.find((x) => x.type === SHT.SYMTAB);
    if (!sec || sec.size === 0) sec = this.sections.find((x) => x.type === SHT.DYNSYM);
    if (!sec) return { n: 0, value: new Float64Array(0), size: new Float64Array(0), local: new Uint8Array(0), file: new Int32Array(0), files: [], name: () => '' };
    if (sec.entsize !== 24) this.malformed(`${sec.name} has entry size ${sec.entsize}, expected 24`);
    if (sec.link >= this.sections.length) this.malformed(`${sec.name} links to missing string table ${sec.link}`);
    const data = this.sectionData(sec);
    const strtab = this.sectionData(this.sections[sec.link]).toString('latin1');
    const total = Math.floor(data.length / 24);
    const value = new Float64Array(total);
    const size = new Float64Array(total);
    const local = new Uint8Array(total);
    const file = new Int32Array(total);
    const nameOff = new Uint32Array(total);
    const files: string[] = [];
    const cname = (off: number) => {
      if (off === 0) return '';
      if (off >= strtab.length) this.malformed(`a symbol name in ${sec!.name} is outside its string table`);
      const end = strtab.indexOf('\0', off);
      return strtab.slice(off, end < 0 ? strtab.length : end);
    };
    let n = 0;
    let curFile = -1;
    for (let i = 0; i < total; i++) {
      const o = i * 24;
      const info = data[o + 4];
      const type = info & 0xf;
      if (type === STT.FILE) {
        files.push(cname(data.readUInt32LE(o)));
        curFile = files.length - 1;
        continue;
      }
      const shndx = data.readUInt16LE(o + 6);
      if ((type !== STT.FUNC && type !== STT.GNU_IFUNC) || shndx === 0 || shndx >= 0xff00) continue;
      const isLocal = info >> 4 === STB.LOCAL;
      nameOff[n] = data.readUInt32LE(o);
      value[n] = this.u64(data, o + 8);
      size[n] = this.u64(data, o + 16);
      local[n] = isLocal ? 1 : 0;
      file[n] = isLocal ? curFile : -1;
      n++;
    }
    return { n, value, size, local, file, files, name: (i: number) => cname(nameOff[i]) };
  }


  // ---- notes, dynamic, relocations ---------------------------------------------------

  notes(): Note[] {
    const out: Note[] = [];
    for (const s of this.sections.filter((x) => x.type === SHT.NOTE)) {
      const d = this.sectionData(s);
      let o = 0;
      while (o + 12 <= d.length) {
        const namesz = d.readUInt32LE(o);
        const descsz = d.readUInt32LE(o + 4);
        const type = d.readUInt32LE(o + 8);
        const nameEnd = o + 12 + namesz;
        const descOff = o + 12 + align4(namesz);
        if (descOff + descsz > d.length || nameEnd > d.length) this.malformed(`note in ${s.name} overruns its section`);
        out.push({ name: d.toString('latin1', o + 12, Math.max(o + 12, nameEnd - 1)), type, desc: d.subarray(descOff, descOff + descsz) });
        o = descOff + align4(descsz);
      }
    }
    return out;
  }

  /** GNU build-id as lowercase hex, if the file has one. */
  buildId(): string | undefined {
    const n = this.notes().find((x) => x.name === 'GNU' && x.type === 3);
    return n ? n.desc.toString('hex') : undefined;
  }

  dynamic(): DynEntry[] {
    const s = this.sections.find((x) => x.name === '.dynamic');
    if (!s) return [];
    const d = this.sectionData(s);
    const out: DynEntry[] = [];
    for (let o = 0; o + 16 <= d.length; o += 16) {
      const tag = Number(d.readBigInt64LE(o));
      if (tag === DT.NULL) break;
      out.push({ tag, value: d.readBigUInt64LE(o + 8) });
    }
    return out;
  }

  /** DT_SONAME, if the file is a shared library that names itself. */
  soname(): string | undefined {
    const e = this.dynamic().find((x) => x.tag === DT.SONAME);
    const dynstr = this.section('.dynstr');
    if (!e || !dynstr) return undefined;
    return this.cstring(this.sectionData(dynstr), Number(e.value), 'DT_SONAME');
  }

  /** Entries of every SHT_RELA section, or of the one named. */
  relocations(name?: string): Rela[] {
    const out: Rela[] = [];
    for (const s of this.sections) {
      if (s.type !== SHT.RELA || (name && s.name !== name)) continue;
      if (s.entsize !== 24) this.malformed(`${s.name} has entry size ${s.entsize}, expected 24`);
      const d = this.sectionData(s);
      for (let o = 0; o + 24 <= d.length; o += 24) {
        // r_info as its two halves; the addend made a BigInt once (from a Number when it fits one, nearly always).
        const hi = d.readInt32LE(o + 20);
        const addend = hi === 0 || hi === -1 ? BigInt(hi * 2 ** 32 + d.readUInt32LE(o + 16)) : d.readBigInt64LE(o + 16);
        out.push({ offset: this.u64(d, o), type: d.readUInt32LE(o + 8), sym: d.readUInt32LE(o + 12), addend });
      }
    }
    return out;
  }

  /**
   * The entries of one RELA section without allocating one per entry (debug
   * sections of an object file hold one per string and reference): offset,
   * type, symbol index and addend, the addend as a Number (exact below 2^53).
   */
  forEachRela(name: string, fn: (offset: number, type: number, sym: number, addend: number) => void): void {
    const s = this.section(name);
    if (!s || s.type !== SHT.RELA) return;
    if (s.entsize !== 24) this.malformed(`${s.name} has entry size ${s.entsize}, expected 24`);
    const d = this.sectionData(s);
    for (let o = 0; o + 24 <= d.length; o += 24) {
      // r_offset and r_info as two 32-bit halves; an object file's offsets are small.
      const offset = d.readUInt32LE(o) + d.readUInt32LE(o + 4) * 2 ** 32;
      fn(offset, d.readUInt32LE(o + 8), d.readUInt32LE(o + 12), d.readInt32LE(o + 20) * 2 ** 32 + d.readUInt32LE(o + 16));
    }
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
