// The relocation table: its facts as the psABI gives them, unknown types
// refused, and the C scanner's constants equal to it.
import * as fs from 'fs';
import * as path from 'path';
import { R_X86_64, RELOC_8_BYTES, relocationType } from './relocations';

test('widths and rip-relative fields as the psABI gives them', () => {
  expect(relocationType(R_X86_64.PC32, 'x')).toEqual({ name: 'R_X86_64_PC32', width: 4, pcrel: true });
  expect(relocationType(R_X86_64._64, 'x')).toMatchObject({ name: 'R_X86_64_64', width: 8, pcrel: false });
  // The two a diff once masked as 4 bytes: both write 8.
  expect(relocationType(R_X86_64.GOTOFF64, 'x').width).toBe(8);
  expect(relocationType(R_X86_64.DTPOFF64, 'x').width).toBe(8);
  expect(relocationType(R_X86_64.REX_GOTPCRELX, 'x')).toMatchObject({ width: 4, pcrel: true, relaxed: [3, 4] });
  expect(relocationType(R_X86_64.TLSDESC_CALL, 'x').width).toBe(0);
  expect([...RELOC_8_BYTES]).toEqual(expect.arrayContaining([R_X86_64._64, R_X86_64.PC64, R_X86_64.GOTOFF64, R_X86_64.DTPOFF64]));
  expect(RELOC_8_BYTES.has(R_X86_64.PC32)).toBe(false);
});

test('an unknown type is an error naming where it was met', () => {
  expect(() => relocationType(40, 'a.o: f')).toThrow(/^a\.o: f: relocation type 40, which hotload does not know/);
  expect(() => relocationType(200, 'b.o')).toThrow(expect.objectContaining({ code: 'ELF_UNSUPPORTED' }));
});

test('the constants of the C sources are the table\'s', () => {
  const files = ['packages/elf/wasm/dwarf-scan.c'].map((f) => path.join(__dirname, '../../..', f));
  let seen = 0;
  for (const f of files) {
    for (const m of fs.readFileSync(f, 'utf8').matchAll(/^#define R_X86_64_(\w+) (\d+)$/gm)) {
      const key = /^\d/.test(m[1]) ? `_${m[1]}` : m[1];
      expect([f, m[1], Number(m[2])]).toEqual([f, m[1], R_X86_64[key as keyof typeof R_X86_64]]);
      seen++;
    }
  }
  expect(seen).toBe(2);
});
