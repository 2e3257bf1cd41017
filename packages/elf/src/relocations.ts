// x86-64 relocation types (System V psABI, x86-64 supplement): what each
// writes (its field's width, whether it is rip-relative) and which bytes
// around it a linker may rewrite when it relaxes the access. The one table:
// every pass that masks, describes or emits a relocated field asks it, and
// the C scanner's constants (packages/elf/wasm/dwarf-scan.c) are checked
// against it by relocations.test.ts.

import { HotloadError } from '@hotload/errors';

export const R_X86_64 = {
  NONE: 0, _64: 1, PC32: 2, GOT32: 3, PLT32: 4, COPY: 5, GLOB_DAT: 6, JUMP_SLOT: 7, RELATIVE: 8, GOTPCREL: 9,
  _32: 10, _32S: 11, _16: 12, PC16: 13, _8: 14, PC8: 15, DTPMOD64: 16, DTPOFF64: 17, TPOFF64: 18, TLSGD: 19,
  TLSLD: 20, DTPOFF32: 21, GOTTPOFF: 22, TPOFF32: 23, PC64: 24, GOTOFF64: 25, GOTPC32: 26, GOT64: 27, GOTPCREL64: 28, GOTPC64: 29,
  GOTPLT64: 30, PLTOFF64: 31, SIZE32: 32, SIZE64: 33, GOTPC32_TLSDESC: 34, TLSDESC_CALL: 35, TLSDESC: 36, IRELATIVE: 37, RELATIVE64: 38,
  GOTPCRELX: 41, REX_GOTPCRELX: 42,
} as const;

export interface RelocationType {
  name: string;
  /** Bytes of the field it writes (0: none, a marker for the linker). */
  width: 0 | 1 | 2 | 4 | 8 | 16;
  /** The field is relative to its own address (its addend includes -width for a rip-relative operand). */
  pcrel: boolean;
  /**
   * Bytes around the field a linker may rewrite when it relaxes the access:
   * [bytes before the field, bytes from its start]. A GOT load becomes a lea
   * or an immediate (opcode, ModRM and REX before the field), an indirect call
   * through the GOT a direct one, a thread-local access in a program its
   * local-exec form (the whole sequence: TLSGD's `lea; call __tls_get_addr`
   * is 16 bytes, TLSLD's 12).
   */
  relaxed?: readonly [number, number];
}

const R = R_X86_64;
const TABLE: [number, RelocationType['width'], boolean, (readonly [number, number])?][] = [
  [R.NONE, 0, false], [R._64, 8, false], [R.PC32, 4, true], [R.GOT32, 4, false], [R.PLT32, 4, true], [R.COPY, 0, false],
  [R.GLOB_DAT, 8, false], [R.JUMP_SLOT, 8, false], [R.RELATIVE, 8, false], [R.GOTPCREL, 4, true], [R._32, 4, false], [R._32S, 4, false],
  [R._16, 2, false], [R.PC16, 2, true], [R._8, 1, false], [R.PC8, 1, true], [R.DTPMOD64, 8, false], [R.DTPOFF64, 8, false],
  [R.TPOFF64, 8, false], [R.TLSGD, 4, true, [4, 12]], [R.TLSLD, 4, true, [3, 9]], [R.DTPOFF32, 4, false], [R.GOTTPOFF, 4, true, [3, 4]],
  [R.TPOFF32, 4, false], [R.PC64, 8, true], [R.GOTOFF64, 8, false], [R.GOTPC32, 4, true], [R.GOT64, 8, false], [R.GOTPCREL64, 8, true],
  [R.GOTPC64, 8, true], [R.GOTPLT64, 8, false], [R.PLTOFF64, 8, false], [R.SIZE32, 4, false], [R.SIZE64, 8, false],
  [R.GOTPC32_TLSDESC, 4, true, [3, 4]], [R.TLSDESC_CALL, 0, false, [0, 2]], [R.TLSDESC, 16, false], [R.IRELATIVE, 8, false],
  [R.RELATIVE64, 8, false], [R.GOTPCRELX, 4, true, [2, 4]], [R.REX_GOTPCRELX, 4, true, [3, 4]],
];
const NAMES = new Map<number, string>(Object.entries(R_X86_64).map(([k, v]) => [v, `R_X86_64_${k.replace(/^_/, '')}`]));
const TYPES = new Map<number, RelocationType>(TABLE.map(([t, width, pcrel, relaxed]) => [t, { name: NAMES.get(t)!, width, pcrel, ...(relaxed ? { relaxed } : {}) }]));

/** What relocation type `type` writes; an unknown type is an error naming `where`. */
export function relocationType(type: number, where: string): RelocationType {
  const t = TYPES.get(type);
  if (!t) throw new HotloadError('ELF_UNSUPPORTED', `${where}: relocation type ${type}, which hotload does not know (not in the x86-64 psABI it was written for)`);
  return t;
}

/** Relocation types that write 8 bytes. */
export const RELOC_8_BYTES: ReadonlySet<number> = new Set(TABLE.filter((x) => x[1] === 8).map((x) => x[0]));
