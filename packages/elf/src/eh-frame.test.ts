// The call frame rules read from .eh_frame agree with `readelf -wF` (binutils'
// own interpretation of the same tables) on the C library and on the loader.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { ElfFile } from './read-elf';
import { EhFrame } from './eh-frame';

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
