// The call frame rules read from .eh_frame agree with `readelf -wF` (binutils'
// own interpretation of the same tables) on the C library and on the loader.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { ElfFile } from './read-elf';
import { EhFrame, evalExpression } from './eh-frame';

/** DWARF register numbers of x86-64, as readelf names them. */
const REGS = ['rax', 'rdx', 'rcx', 'rbx', 'rsi', 'rdi', 'rbp', 'rsp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'];

interface Row {
  loc: number;
  cfa: string;
  ra: string;
  rbp?: string;
}

/** Rows of every FDE as readelf interprets them, and the FDEs that have none of their own (the CIE's row holds). */
function readelfRows(file: string): { rows: Row[]; bare: number[] } {
  // readelf may exit 1 over a debug link it cannot follow; its output is whole.
  const text = spawnSync('readelf', ['-wF', file], { encoding: 'utf8', maxBuffer: 256 << 20 }).stdout;
  const rows: Row[] = [];
  const bare: number[] = [];
  let cols: string[] = [];
  let fde: { pc: number; rows: number } | undefined;
  const close = () => {
    if (fde && fde.rows === 0) bare.push(fde.pc);
    fde = undefined;
    cols = [];
  };
  for (const line of text.split('\n')) {
    const f = / FDE cie=\S+ pc=([0-9a-f]+)\.\./.exec(line);
    if (f || / CIE /.test(line)) {
      close();
      if (f) fde = { pc: parseInt(f[1], 16), rows: 0 };
      continue;
    }
    if (/^\s+LOC\s+CFA/.test(line)) {
      cols = line.trim().split(/\s+/);
      continue;
    }
    const m = /^([0-9a-f]{16}) (.*)$/.exec(line);
    if (!m || !fde || !cols.length) continue;
    const vals = m[2].trim().split(/\s+/);
    const get = (c: string) => vals[cols.indexOf(c) - 1];
    rows.push({ loc: parseInt(m[1], 16), cfa: get('CFA'), ra: get('ra'), rbp: cols.includes('rbp') ? get('rbp') : undefined });
    fde.rows++;
  }
  close();
  return { rows, bare };
}

for (const file of ['/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2', path.resolve(__dirname, '../../../fixtures/build/target')]) {
  test(`${file}: the rules at sampled addresses match readelf -wF`, () => {
    const eh = EhFrame.of(ElfFile.open(file))!;
    expect(eh).toBeDefined();
    const { rows, bare } = readelfRows(file);
    expect(rows.length).toBeGreaterThan(file.includes('libc') ? 1000 : 20);
    const step = Math.max(1, Math.floor(rows.length / 600));
    let compared = 0;
    for (let i = 0; i < rows.length; i += step) {
      const want = rows[i];
      const got = eh.rowAt(want.loc)!;
      expect(got).toBeDefined();
      const cfa = got.cfaReg === -1 ? 'exp' : `${REGS[got.cfaReg] ?? `r${got.cfaReg}`}+${got.cfaOff}`;
      if (want.cfa === 'exp' || cfa === 'exp') {
        // An expression somewhere in the row: hotload stops unwinding there.
        expect(got.cfaReg === -1 || want.cfa !== 'exp').toBe(true);
        continue;
      }
      expect([want.loc.toString(16), cfa]).toEqual([want.loc.toString(16), want.cfa]);
      if (want.ra === 'u') expect(got.outermost).toBe(true);
      else expect(got.raAt).toBe(Number(want.ra.replace(/^c/, '')));
      if (want.rbp && /^c-\d+$/.test(want.rbp)) expect(got.rbpAt).toBe(Number(want.rbp.slice(1)));
      else expect(got.rbpAt).toBeUndefined();
      compared++;
    }
    expect(compared).toBeGreaterThan(20);
    for (const pc of bare.slice(0, 50)) {
      // No row of its own: the CIE's (or, for _start, the return address marked undefined).
      const row = eh.rowAt(pc)!;
      expect(row).toMatchObject({ cfaReg: 7, cfaOff: 8 });
      expect(row.raAt === -8 || row.outermost).toBe(true);
    }
  });
}

test('an address no FDE covers has no row', () => {
  const eh = EhFrame.of(ElfFile.open('/lib/x86_64-linux-gnu/libc.so.6'))!;
  expect(eh.rowAt(0)).toBeUndefined();
  expect(eh.rowAt(0x7fffffff)).toBeUndefined();
});

test("the linker's .plt CFA expression and glibc's signal frame rules are read as expressions, and evaluated", () => {
  const target = ElfFile.open(path.resolve(__dirname, '../../../fixtures/build/target'));
  const plt = target.section('.plt')!;
  const row = EhFrame.of(target)!.rowAt(plt.addr + 0x20)!;
  expect(row.cfaReg).toBe(-1);
  // DW_OP_breg7 (rsp) 8; DW_OP_breg16 (rip) 0; lit15; and; lit11; ge; lit3; shl; plus: rsp+8, or rsp+16 from the entry's 11th byte.
  const at = (rip: number) => evalExpression(row.cfaExpr!, { reg: (n) => (n === 7 ? 0x1000n : n === 16 ? BigInt(rip) : undefined), read8: () => 0n });
  expect(at(plt.addr + 0x20)).toBe(0x1008n);
  expect(at(plt.addr + 0x20 + 10)).toBe(0x1008n);
  expect(at(plt.addr + 0x20 + 11)).toBe(0x1010n);

  // __restore_rt: 'S', the CFA read from the saved rsp, every register saved at rsp+n.
  const text = spawnSync('readelf', ['-wf', '/lib/x86_64-linux-gnu/libc.so.6'], { encoding: 'utf8', maxBuffer: 256 << 20 }).stdout;
  const fde = parseInt(/FDE cie=\S+ pc=([0-9a-f]+)\.\./.exec(text.slice(text.indexOf('"zRS"')))![1], 16);
  const sig = EhFrame.of(ElfFile.open('/lib/x86_64-linux-gnu/libc.so.6'))!.rowAt(fde + 1)!;
  expect(sig.signal).toBe(true);
  const mem = (a: bigint) => (a === 0x2000n + 160n ? 0x7777n : 0n);
  expect(evalExpression(sig.cfaExpr!, { reg: (n) => (n === 7 ? 0x2000n : undefined), read8: mem })).toBe(0x7777n);
  const rip = sig.regs.get(16) as { atExpr: Buffer };
  expect(evalExpression(rip.atExpr, { reg: (n) => (n === 7 ? 0x2000n : undefined), read8: mem }, 0x7777n)).toBe(0x2000n + 168n);
  expect(EhFrame.of(target)!.rowAt(plt.addr + 0x20)!.signal).toBe(false);
});

test('evalExpression: constants, arithmetic, comparisons and deref; an unknown register or operation throws', () => {
  const cx = { reg: (n: number) => (n === 6 ? 100n : undefined), read8: (a: bigint) => a * 2n };
  const ev = (...ops: number[]) => evalExpression(Buffer.from(ops), cx);
  expect(ev(0x76, 0x78)).toBe(92n); // breg6 -8
  expect(ev(0x76, 0x08, 0x06)).toBe(216n); // breg6 +8; deref
  expect(ev(0x08, 0xff, 0x35, 0x1c)).toBe(250n); // const1u 255; lit5; minus
  expect(ev(0x09, 0xff)).toBe((1n << 64n) - 1n); // const1s -1
  expect(ev(0x33, 0x35, 0x2d)).toBe(1n); // 3 < 5
  expect(ev(0x3f, 0x23, 0x81, 0x01)).toBe(15n + 129n); // lit15; plus_uconst 129
  expect(() => ev(0x73, 0x00)).toThrow(/register 3 not known/); // breg3 (rbx)
  expect(() => ev(0xe0)).toThrow(/operation 0xe0/);
  expect(evalExpression(Buffer.from([0x23, 0x10]), cx, 0x1000n)).toBe(0x1010n); // the CFA pushed first
});
