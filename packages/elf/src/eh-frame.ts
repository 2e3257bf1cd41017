// Call frame information (.eh_frame, found through .eh_frame_hdr): for a code
// address, where the caller's frame is. The injector unwinds a stopped thread's
// stack with it to see which functions it is inside (a thread inside malloc,
// or in a callback of dl_iterate_phdr, must not host dlopen).
//
// Only what x86-64 code uses is read: the CFA as a register plus an offset,
// and the return address and rbp saved at an offset from it. A rule given as
// a DWARF expression is reported as such, and the caller stops unwinding.

import { ElfFile, Section } from './read-elf';

/** The rules at one code address. Offsets are from the CFA, in bytes. */
export interface CfaRow {
  /** DWARF register the CFA is relative to (7 = rsp, 6 = rbp), or -1 for an expression. */
  cfaReg: number;
  cfaOff: number;
  /** Where the return address is saved (undefined in the outermost frame). */
  raAt?: number;
  /** The return address is marked undefined: this is the outermost frame (_start, a thread's start). */
  outermost?: boolean;
  /** Where rbp is saved; undefined: it keeps its value. */
  rbpAt?: number;
}

const DW_REG_RBP = 6;

class Reader {
  constructor(
    readonly b: Buffer,
    public pos: number,
  ) {}
  u8(): number {
    return this.b[this.pos++];
  }
  u16(): number {
    const v = this.b.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    const v = this.b.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  s32(): number {
    const v = this.b.readInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): number {
    const v = Number(this.b.readBigUInt64LE(this.pos));
    this.pos += 8;
    return v;
  }
  /** Skip a block whose length (uleb128) comes first. */
  skipBlock(): void {
    const n = this.uleb();
    this.pos += n; // not `pos += uleb()`: that adds to the position before the length was read
  }
  uleb(): number {
    let v = 0;
    let shift = 0;
    for (;;) {
      const c = this.u8();
      v += (c & 0x7f) * 2 ** shift;
      shift += 7;
      if (!(c & 0x80)) return v;
    }
  }
  sleb(): number {
    let v = 0;
    let shift = 0;
    let c: number;
    do {
      c = this.u8();
      v += (c & 0x7f) * 2 ** shift;
      shift += 7;
    } while (c & 0x80);
    return c & 0x40 ? v - 2 ** shift : v;
  }
}

interface Cie {
  codeAlign: number;
  dataAlign: number;
  raReg: number;
  fdeEnc: number;
  hasAugData: boolean;
  initial: Buffer;
}

type Rule = { off: number } | 'undefined' | 'same' | 'other';

export class EhFrame {
  private readonly frame: Section;
  private readonly frameData: Buffer;
  private readonly hdr?: { data: Buffer; addr: number; tableAt: number; count: number; enc: number };
  private readonly cies = new Map<number, Cie>();

  private constructor(readonly elf: ElfFile, frame: Section, hdr: Section | undefined) {
    this.frame = frame;
    this.frameData = elf.sectionData(frame);
    if (hdr) {
      const data = elf.sectionData(hdr);
      const r = new Reader(data, 0);
      const version = r.u8();
      const ptrEnc = r.u8();
      const countEnc = r.u8();
      const tableEnc = r.u8();
      if (version === 1 && tableEnc === 0x3b) {
        this.readPtr(r, ptrEnc, hdr.addr, hdr.addr);
        const count = this.readPtr(r, countEnc, hdr.addr, hdr.addr);
        this.hdr = { data, addr: hdr.addr, tableAt: r.pos, count, enc: tableEnc };
      }
    }
  }

  /** The call frame information of an ELF file, or undefined when it has none. */
  static of(elf: ElfFile): EhFrame | undefined {
    const frame = elf.section('.eh_frame');
    if (!frame || frame.size === 0 || frame.type === 8) return undefined;
    return new EhFrame(elf, frame, elf.section('.eh_frame_hdr'));
  }

  /** The rules that hold at `pc` (a link-time address of this file), or undefined when no FDE covers it. */
  rowAt(pc: number): CfaRow | undefined {
    const fde = this.findFde(pc);
    if (fde === undefined) return undefined;
    return this.runFde(fde, pc);
  }

  private readPtr(r: Reader, enc: number, fieldBase: number, dataBase: number): number {
    if (enc === 0xff) return 0;
    const at = fieldBase + r.pos;
    let v: number;
    switch (enc & 0x0f) {
      case 0x00: v = r.u64(); break;
      case 0x01: v = r.uleb(); break;
      case 0x02: v = r.u16(); break;
      case 0x03: v = r.u32(); break;
      case 0x04: v = r.u64(); break;
      case 0x09: v = r.sleb(); break;
      case 0x0a: v = r.b.readInt16LE(r.pos); r.pos += 2; break;
      case 0x0b: v = r.s32(); break;
      case 0x0c: v = r.u64(); break;
      default: throw new Error(`pointer encoding 0x${enc.toString(16)}`);
    }
    switch (enc & 0x70) {
      case 0x00: break;
      case 0x10: v += at; break; // pcrel
      case 0x30: v += dataBase; break; // datarel
      default: throw new Error(`pointer application 0x${enc.toString(16)}`);
    }
    return v;
  }

  /** Offset in .eh_frame of the FDE covering pc. */
  private findFde(pc: number): number | undefined {
    if (this.hdr) {
      const { data, addr, tableAt, count } = this.hdr;
      let lo = 0;
      let hi = count - 1;
      let best = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const start = data.readInt32LE(tableAt + mid * 8) + addr;
        if (start <= pc) {
          best = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      if (best < 0) return undefined;
      const fdeAddr = data.readInt32LE(tableAt + best * 8 + 4) + addr;
      const off = fdeAddr - this.frame.addr;
      const range = this.fdeRange(off);
      return range && pc >= range[0] && pc < range[1] ? off : undefined;
    }
    // No header: walk every entry.
    for (let off = 0; off + 8 <= this.frameData.length; ) {
      const len = this.frameData.readUInt32LE(off);
      if (len === 0) break;
      const id = this.frameData.readUInt32LE(off + 4);
      if (id !== 0) {
        const range = this.fdeRange(off);
        if (range && pc >= range[0] && pc < range[1]) return off;
      }
      off += 4 + len;
    }
    return undefined;
  }

  private cie(off: number): Cie {
    let c = this.cies.get(off);
    if (c) return c;
    const r = new Reader(this.frameData, off);
    const len = r.u32();
    const end = off + 4 + len;
    r.u32(); // CIE id
    const version = r.u8();
    let aug = '';
    for (let ch = r.u8(); ch !== 0; ch = r.u8()) aug += String.fromCharCode(ch);
    if (aug.includes('eh')) r.u64();
    const codeAlign = r.uleb();
    const dataAlign = r.sleb();
    const raReg = version === 1 ? r.u8() : r.uleb();
    let fdeEnc = 0;
    let hasAugData = false;
    if (aug.startsWith('z')) {
      hasAugData = true;
      const n = r.uleb();
      const augEnd = r.pos + n;
      for (const ch of aug.slice(1)) {
        if (ch === 'R') fdeEnc = r.u8();
        else if (ch === 'P') {
          const enc = r.u8();
          this.readPtr(r, enc & 0x7f, this.frame.addr, 0);
        } else if (ch === 'L') r.u8();
      }
      r.pos = augEnd;
    }
    c = { codeAlign, dataAlign, raReg, fdeEnc, hasAugData, initial: this.frameData.subarray(r.pos, end) };
    this.cies.set(off, c);
    return c;
  }

  /** [start, end) of the FDE at `off`. */
  private fdeRange(off: number): [number, number] | undefined {
    const r = new Reader(this.frameData, off);
    const len = r.u32();
    if (len === 0 || len === 0xffffffff) return undefined;
    const ciePtrAt = r.pos;
    const ciePtr = r.u32();
    if (ciePtr === 0) return undefined;
    const cie = this.cie(ciePtrAt - ciePtr);
    const start = this.readPtr(r, cie.fdeEnc, this.frame.addr, 0);
    const range = this.readPtr(r, cie.fdeEnc & 0x0f, this.frame.addr, 0);
    return [start, start + range];
  }

  private runFde(off: number, pc: number): CfaRow | undefined {
    const r = new Reader(this.frameData, off);
    const len = r.u32();
    const end = off + 4 + len;
    const ciePtrAt = r.pos;
    const cie = this.cie(ciePtrAt - r.u32());
    const start = this.readPtr(r, cie.fdeEnc, this.frame.addr, 0);
    this.readPtr(r, cie.fdeEnc & 0x0f, this.frame.addr, 0);
    if (cie.hasAugData) r.skipBlock();
    const st = { cfaReg: 7, cfaOff: 8, regs: new Map<number, Rule>() };
    const run = (code: Buffer, loc: { at: number }, initial?: Map<number, Rule>): boolean => {
      const q = new Reader(code, 0);
      const stack: { cfaReg: number; cfaOff: number; regs: Map<number, Rule> }[] = [];
      const advance = (d: number) => {
        loc.at += d * cie.codeAlign;
        return loc.at > pc;
      };
      while (q.pos < code.length) {
        const op = q.u8();
        const hi = op & 0xc0;
        const lo6 = op & 0x3f;
        if (hi === 0x40) {
          if (advance(lo6)) return true;
          continue;
        }
        if (hi === 0x80) {
          st.regs.set(lo6, { off: q.uleb() * cie.dataAlign });
          continue;
        }
        if (hi === 0xc0) {
          const init = initial?.get(lo6);
          if (init) st.regs.set(lo6, init);
          else st.regs.delete(lo6);
          continue;
        }
        switch (op) {
          case 0x00: break;
          case 0x01: loc.at = this.readPtr(q, cie.fdeEnc, 0, 0); if (loc.at > pc) return true; break;
          case 0x02: if (advance(q.u8())) return true; break;
          case 0x03: if (advance(q.u16())) return true; break;
          case 0x04: if (advance(q.u32())) return true; break;
          case 0x05: { const reg = q.uleb(); st.regs.set(reg, { off: q.uleb() * cie.dataAlign }); break; }
          case 0x06: { const reg = q.uleb(); const init = initial?.get(reg); if (init) st.regs.set(reg, init); else st.regs.delete(reg); break; }
          case 0x07: st.regs.set(q.uleb(), 'undefined'); break;
          case 0x08: st.regs.set(q.uleb(), 'same'); break;
          case 0x09: { const reg = q.uleb(); q.uleb(); st.regs.set(reg, 'other'); break; }
          case 0x0a: stack.push({ cfaReg: st.cfaReg, cfaOff: st.cfaOff, regs: new Map(st.regs) }); break;
          case 0x0b: { const s = stack.pop(); if (s) { st.cfaReg = s.cfaReg; st.cfaOff = s.cfaOff; st.regs = s.regs; } break; }
          case 0x0c: st.cfaReg = q.uleb(); st.cfaOff = q.uleb(); break;
          case 0x0d: st.cfaReg = q.uleb(); break;
          case 0x0e: st.cfaOff = q.uleb(); break;
          case 0x0f: q.skipBlock(); st.cfaReg = -1; break; // def_cfa_expression
          case 0x10: { const reg = q.uleb(); q.skipBlock(); st.regs.set(reg, 'other'); break; }
          case 0x11: { const reg = q.uleb(); st.regs.set(reg, { off: q.sleb() * cie.dataAlign }); break; }
          case 0x12: st.cfaReg = q.uleb(); st.cfaOff = q.sleb() * cie.dataAlign; break;
          case 0x13: st.cfaOff = q.sleb() * cie.dataAlign; break;
          case 0x14: { const reg = q.uleb(); q.uleb(); st.regs.set(reg, 'other'); break; }
          case 0x15: { const reg = q.uleb(); q.sleb(); st.regs.set(reg, 'other'); break; }
          case 0x16: { const reg = q.uleb(); q.skipBlock(); st.regs.set(reg, 'other'); break; }
          case 0x2e: q.uleb(); break; // GNU_args_size
          case 0x2f: { const reg = q.uleb(); st.regs.set(reg, { off: -q.uleb() * cie.dataAlign }); break; }
          default: return false; // unknown: no row
        }
      }
      return true;
    };
    if (!run(cie.initial, { at: start })) return undefined;
    const initial = new Map(st.regs);
    if (!run(this.frameData.subarray(r.pos, end), { at: start }, initial)) return undefined;
    const ra = st.regs.get(cie.raReg);
    const rbp = st.regs.get(DW_REG_RBP);
    if (ra === 'undefined') return { cfaReg: st.cfaReg, cfaOff: st.cfaOff, outermost: true };
    if (ra === undefined || typeof ra !== 'object' || rbp === 'other' || rbp === 'undefined') return { cfaReg: -1, cfaOff: 0 }; // not followed
    return { cfaReg: st.cfaReg, cfaOff: st.cfaOff, raAt: ra.off, rbpAt: rbp && typeof rbp === 'object' ? rbp.off : undefined };
  }
}
