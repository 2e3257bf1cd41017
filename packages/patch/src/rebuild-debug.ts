// The debug information of a patch made from a rebuild: the DWARF sections of
// each object file whose code the patch holds, copied whole (inflated when
// built with -gz) with their relocations written as assembler expressions, so
// `cc -shared` lays them out as it would for any library:
//
// - a reference to another debug section of the object (a string, an
//   abbreviation table, a line program) -> a label at the start of that
//   object's part of the section;
// - an address of code or read-only data the patch holds -> its label; the
//   linked file then holds the address at link time, and attach moves it by
//   the patch's load address in the copy debuggers read;
// - an address of data the program has (a global variable's location) or of
//   new data -> zero, plus a `.hotload.debug` entry naming the reference, which
//   attach resolves as it does the code's;
// - anything else (code the patch leaves out: the program's own debug
//   information describes it) -> the tombstone linkers use for discarded code,
//   0 (1 in .debug_ranges and .debug_loc, where 0 0 ends a list), which
//   debuggers skip.
//
// A section's bytes go in whole, with `.incbin` from a file written beside
// the assembly (its constant fields, the tombstones and the zeros, written
// into it first), and each relocated field as a `.reloc` directive: a large
// unit's DWARF is megabytes with thousands of relocations, and neither this
// code nor the assembler goes through it byte by byte.

import * as fs from 'fs';
import * as path from 'path';
import { RELOC_8_BYTES, R_X86_64, SHF, SHT, STT, Section } from '@hotload/elf';
import { Generator, Unit, signed } from './rebuild-asm';
import { DEBUG_INSIDE, DEBUG_SECTION } from './rebuild-format';

const isDebug = (s: Section) => s.name.startsWith('.debug_') && s.type === SHT.PROGBITS && !(s.flags & SHF.ALLOC);

/**
 * Assembly for the debug sections of the units with code in the patch;
 * `sections` names those the table refers to. Their bytes are written to
 * files in `dir` (where the assembler runs), one per unit.
 */
export function debugAsm(g: Generator, units: Unit[], dir: string): { asm: string[]; sections: string[] } {
  const asm: string[] = [];
  const table: string[] = [];
  const sections: string[] = [];
  const sectionIndex = (name: string) => {
    let i = sections.indexOf(name);
    if (i < 0) i = sections.push(name) - 1;
    return i;
  };
  for (const u of units) {
    if (u.include.size === 0) continue;
    const elf = u.b.elf;
    const debugSecs = elf.sections.filter(isDebug);
    const emitted = new Set(debugSecs.map((s) => s.index));
    const label = (sec: number) => `hl.d.${u.idx}.${sec}`;
    // Every debug section of the unit, one after the other, in one file.
    const file = `hl.d.${u.idx}.bin`;
    const contents = debugSecs.map((sec) => elf.sectionContents(sec));
    const blob = Buffer.concat(contents);
    let at = 0;
    for (const [k, sec] of debugSecs.entries()) {
      const start = at;
      const size = contents[k].length;
      at += size;
      const rela = elf.sections.find((r) => r.type === SHT.RELA && r.info === sec.index);
      const relocs = rela ? [...elf.relocations(rela.name)].sort((a, b) => a.offset - b.offset) : [];
      const tombstone = sec.name === '.debug_ranges' || sec.name === '.debug_loc' ? 1 : 0;
      const here = label(sec.index);
      const out = [`\t.section ${sec.name},"",@progbits`, `${here}:`];
      if (size) out.push(`\t.incbin "${file}",${start},${size}`);
      /** A field the linker fills: `value` (an expression) at `offset`. */
      const reloc = (offset: number, width: number, value: string) => out.push(`\t.reloc ${here}+${offset}, ${width === 8 ? 'R_X86_64_64' : 'R_X86_64_32'}, ${value}`);
      /** A field that holds a constant in the patch. */
      const constant = (offset: number, width: number, v: number) => (width === 8 ? blob.writeBigUInt64LE(BigInt(v), start + offset) : blob.writeUInt32LE(v, start + offset));
      let pos = 0;
      for (const r of relocs) {
        const width = RELOC_8_BYTES.has(r.type) ? 8 : 4;
        if (r.offset < pos || r.offset + width > size) continue; // overlapping or outside: leave the bytes as they are
        const sym = u.b.syms[r.sym];
        const target = sym && sym.shndx > 0 && sym.shndx < 0xff00 ? elf.sections[sym.shndx] : undefined;
        const off = BigInt(sym && sym.type !== STT.SECTION ? sym.value : 0) + r.addend;
        if (target && emitted.has(target.index)) {
          reloc(r.offset, width, `${label(target.index)}${signed(off)}`);
        } else {
          const a = width === 8 && r.type !== R_X86_64.DTPOFF64 /* a thread-local offset, not an address */ ? g.debugAddress(u, r.sym, r.addend) : undefined;
          if (a && 'internal' in a) {
            reloc(r.offset, 8, `${a.internal}${signed(a.off)}`);
            table.push(`\t.quad ${here} + ${r.offset}\n\t.quad 0\n\t.long ${sectionIndex(sec.name)}\n\t.long ${DEBUG_INSIDE}`);
          } else if (a) {
            constant(r.offset, 8, 0);
            table.push(`\t.quad ${here} + ${r.offset}\n\t.quad ${a.off}\n\t.long ${sectionIndex(sec.name)}\n\t.long ${a.ref}`);
          } else constant(r.offset, width, tombstone);
        }
        pos = r.offset + width;
      }
      asm.push(out.join('\n'));
    }
    fs.writeFileSync(path.join(dir, file), blob);
  }
  if (table.length) asm.push(`\t.section ${DEBUG_SECTION},"",@progbits\n${table.join('\n')}`);
  return { asm, sections };
}
