// Call frame information (.eh_frame, found through .eh_frame_hdr): for a code
// address, where the caller's frame is. The injector unwinds a stopped thread's
// stack with it to see which functions it is inside (a thread inside malloc,
// or in a callback of dl_iterate_phdr, must not host dlopen).
//
// A row gives the CFA (a register plus an offset, or a DWARF expression) and a
// rule per register: saved at CFA+n, equal to CFA+n, saved at (or equal to)
// the value of an expression, in another register, undefined, or unchanged.
// Expressions are evaluated by `evalExpression` with the operations x86-64
// code uses: the linker's `.plt` CFA (DW_OP_breg7 rsp, DW_OP_breg16 rip,
// lit, and, ge, shl, plus) and glibc's signal frame (__restore_rt, marked
// 'S': DW_OP_breg7 + n, DW_OP_deref). DWARF 5 section 6.4 (call frame
// information), 2.5 (expressions); the LSB's .eh_frame format.

import { ElfFile, Section } from './read-elf';

/** A register's rule (offsets in bytes). */
export type RegRule =
  | { at: number } // saved at CFA + at
  | { val: number } // its value is CFA + val
  | { atExpr: Buffer } // saved at the address the expression gives (CFA pushed first)
  | { valExpr: Buffer } // its value is what the expression gives (CFA pushed first)
  | { reg: number } // in another register
  | 'undefined'
  | 'same';

/** The rules at one code address. Offsets are from the CFA, in bytes. */
export interface CfaRow {
  /** DWARF register the CFA is relative to (7 = rsp, 6 = rbp), or -1 when an expression gives it (cfaExpr). */
  cfaReg: number;
  cfaOff: number;
  cfaExpr?: Buffer;
  /** Where the return address is saved (undefined in the outermost frame, or when another rule than an offset gives it). */
  raAt?: number;
  /** The return address is marked undefined: this is the outermost frame (_start, a thread's start). */
  outermost?: boolean;
  /** Where rbp is saved; undefined: another rule, or it keeps its value. */
  rbpAt?: number;
  /** The return-address column (16 on x86-64). */
  raReg: number;
  /** Every register with a rule (the others keep their value). */
  regs: Map<number, RegRule>;
  /** A signal frame (augmentation 'S'): the caller's pc is where it was interrupted, not a return address. */
  signal: boolean;
}

/** Registers an expression reads (DWARF numbers; 16 is rip) and memory. */
export interface ExprContext {
  reg(n: number): bigint | undefined;
  read8(at: bigint): bigint;
}

const MASK64 = (1n << 64n) - 1n;

/**
 * Evaluate a DWARF expression (the operations call frame information uses);
 * `push` is put on the stack first (the CFA, for register rules). Throws on an
 * operation it does not know or a register it is not given.
 */
export function evalExpression(expr: Buffer, cx: ExprContext, push?: bigint): bigint {
  const r = new Reader(expr, 0);
  const st: bigint[] = push === undefined ? [] : [push];
  const pop = () => {
    const v = st.pop();
    if (v === undefined) throw new Error('DWARF expression: stack empty');
    return v;
  };
  const bin = (f: (a: bigint, b: bigint) => bigint) => {
    const b = pop();
    const a = pop();
    st.push(f(a, b) & MASK64);
  };
  const signed = (v: bigint) => BigInt.asIntN(64, v);
  while (r.pos < expr.length) {
    const op = r.u8();
    if (op >= 0x30 && op <= 0x4f) st.push(BigInt(op - 0x30)); // DW_OP_lit0..31
    else if (op >= 0x70 && op <= 0x8f) {
      // DW_OP_breg0..31: register + signed offset
      const v = cx.reg(op - 0x70);
      if (v === undefined) throw new Error(`DWARF expression: register ${op - 0x70} not known`);
      st.push((v + BigInt(r.sleb())) & MASK64);
    } else if (op >= 0x50 && op <= 0x6f) {
      // DW_OP_reg0..31: only a location, not a value: not in a CFA
      throw new Error('DWARF expression: DW_OP_reg in call frame information');
    } else {
      switch (op) {
        case 0x06: st.push(cx.read8(pop())); break; // deref
        case 0x08: st.push(BigInt(r.u8())); break; // const1u
        case 0x09: st.push(BigInt(r.b.readInt8(r.pos++)) & MASK64); break; // const1s
        case 0x0a: st.push(BigInt(r.u16())); break; // const2u
        case 0x0b: st.push(BigInt(r.b.readInt16LE((r.pos += 2) - 2)) & MASK64); break; // const2s
        case 0x0c: st.push(BigInt(r.u32())); break; // const4u
        case 0x0d: st.push(BigInt(r.s32()) & MASK64); break; // const4s
        case 0x0e: st.push(r.b.readBigUInt64LE((r.pos += 8) - 8)); break; // const8u
        case 0x0f: st.push(r.b.readBigUInt64LE((r.pos += 8) - 8)); break; // const8s
        case 0x10: st.push(BigInt(r.uleb())); break; // constu
        case 0x11: st.push(BigInt(r.sleb()) & MASK64); break; // consts
        case 0x12: st.push(st[st.length - 1] ?? pop()); break; // dup
        case 0x13: pop(); break; // drop
        case 0x14: st.push(st[st.length - 2] ?? pop()); break; // over
        case 0x16: { const b = pop(); const a = pop(); st.push(b, a); break; } // swap
        case 0x1a: bin((a, b) => a & b); break; // and
        case 0x1c: bin((a, b) => a - b); break; // minus
        case 0x1e: bin((a, b) => a * b); break; // mul
        case 0x20: st.push(~pop() & MASK64); break; // not
        case 0x21: bin((a, b) => a | b); break; // or
        case 0x22: bin((a, b) => a + b); break; // plus
        case 0x23: st.push((pop() + BigInt(r.uleb())) & MASK64); break; // plus_uconst
        case 0x24: bin((a, b) => a << b); break; // shl
        case 0x25: bin((a, b) => a >> b); break; // shr
        case 0x26: bin((a, b) => BigInt.asUintN(64, signed(a) >> b)); break; // shra
        case 0x27: bin((a, b) => a ^ b); break; // xor
        case 0x29: bin((a, b) => (a === b ? 1n : 0n)); break; // eq
        case 0x2a: bin((a, b) => (signed(a) >= signed(b) ? 1n : 0n)); break; // ge
        case 0x2b: bin((a, b) => (signed(a) > signed(b) ? 1n : 0n)); break; // gt
        case 0x2c: bin((a, b) => (signed(a) <= signed(b) ? 1n : 0n)); break; // le
        case 0x2d: bin((a, b) => (signed(a) < signed(b) ? 1n : 0n)); break; // lt
        case 0x2e: bin((a, b) => (a !== b ? 1n : 0n)); break; // ne
        case 0x96: break; // nop
        default: throw new Error(`DWARF expression: operation 0x${op.toString(16)}`);
      }
    }
  }
  return pop();
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
  /** A block whose length (uleb128) comes first. */
  block(): Buffer {
    const n = this.uleb();
    const at = this.pos;
    this.pos += n;
    return this.b.subarray(at, at + n);
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
  /** Augmentation 'S': its FDEs describe signal frames. */
  signal: boolean;
  initial: Buffer;
}

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
    c = { codeAlign, dataAlign, raReg, fdeEnc, hasAugData, signal: aug.includes('S'), initial: this.frameData.subarray(r.pos, end) };
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
    type State = { cfaReg: number; cfaOff: number; cfaExpr?: Buffer; regs: Map<number, RegRule> };
    const st: State = { cfaReg: 7, cfaOff: 8, regs: new Map<number, RegRule>() };
    const run = (code: Buffer, loc: { at: number }, initial?: Map<number, RegRule>): boolean => {
      const q = new Reader(code, 0);
      const stack: State[] = [];
      const advance = (d: number) => {
        loc.at += d * cie.codeAlign;
        return loc.at > pc;
      };
      const restore = (reg: number) => {
        const init = initial?.get(reg);
        if (init) st.regs.set(reg, init);
        else st.regs.delete(reg);
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
          st.regs.set(lo6, { at: q.uleb() * cie.dataAlign });
          continue;
        }
        if (hi === 0xc0) {
          restore(lo6);
          continue;
        }
        switch (op) {
          case 0x00: break; // nop
          case 0x01: loc.at = this.readPtr(q, cie.fdeEnc, 0, 0); if (loc.at > pc) return true; break; // set_loc
          case 0x02: if (advance(q.u8())) return true; break; // advance_loc1
          case 0x03: if (advance(q.u16())) return true; break; // advance_loc2
          case 0x04: if (advance(q.u32())) return true; break; // advance_loc4
          case 0x05: { const reg = q.uleb(); st.regs.set(reg, { at: q.uleb() * cie.dataAlign }); break; } // offset_extended
          case 0x06: restore(q.uleb()); break; // restore_extended
          case 0x07: st.regs.set(q.uleb(), 'undefined'); break;
          case 0x08: st.regs.set(q.uleb(), 'same'); break;
          case 0x09: { const reg = q.uleb(); st.regs.set(reg, { reg: q.uleb() }); break; } // register
          case 0x0a: stack.push({ ...st, regs: new Map(st.regs) }); break; // remember_state
          case 0x0b: { const s = stack.pop(); if (s) { st.cfaReg = s.cfaReg; st.cfaOff = s.cfaOff; st.cfaExpr = s.cfaExpr; st.regs = s.regs; } break; } // restore_state
          case 0x0c: st.cfaReg = q.uleb(); st.cfaOff = q.uleb(); st.cfaExpr = undefined; break; // def_cfa
          case 0x0d: st.cfaReg = q.uleb(); st.cfaExpr = undefined; break; // def_cfa_register
          case 0x0e: st.cfaOff = q.uleb(); break; // def_cfa_offset
          case 0x0f: st.cfaExpr = q.block(); st.cfaReg = -1; break; // def_cfa_expression
          case 0x10: { const reg = q.uleb(); st.regs.set(reg, { atExpr: q.block() }); break; } // expression
          case 0x11: { const reg = q.uleb(); st.regs.set(reg, { at: q.sleb() * cie.dataAlign }); break; } // offset_extended_sf
          case 0x12: st.cfaReg = q.uleb(); st.cfaOff = q.sleb() * cie.dataAlign; st.cfaExpr = undefined; break; // def_cfa_sf
          case 0x13: st.cfaOff = q.sleb() * cie.dataAlign; break; // def_cfa_offset_sf
          case 0x14: { const reg = q.uleb(); st.regs.set(reg, { val: q.uleb() * cie.dataAlign }); break; } // val_offset
          case 0x15: { const reg = q.uleb(); st.regs.set(reg, { val: q.sleb() * cie.dataAlign }); break; } // val_offset_sf
          case 0x16: { const reg = q.uleb(); st.regs.set(reg, { valExpr: q.block() }); break; } // val_expression
          case 0x2e: q.uleb(); break; // GNU_args_size
          case 0x2f: { const reg = q.uleb(); st.regs.set(reg, { at: -q.uleb() * cie.dataAlign }); break; } // GNU_negative_offset_extended
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
    const at = (x: RegRule | undefined) => (x && typeof x === 'object' && 'at' in x ? x.at : undefined);
    return {
      cfaReg: st.cfaReg,
      cfaOff: st.cfaOff,
      cfaExpr: st.cfaExpr,
      raReg: cie.raReg,
      raAt: at(ra),
      outermost: ra === 'undefined' || undefined,
      rbpAt: at(rbp),
      regs: st.regs,
      signal: cie.signal,
    };
  }
}
