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
// The bytes between relocations go in as `.ascii` strings (AsciiText: each
// section escaped once, each run between two relocations a substring of it):
// a large unit's DWARF is megabytes, and the assembler reads strings fastest.

import { RELOC_8_BYTES, R_X86_64, SHF, SHT, STT, Section } from '@hotload/elf';
import { AsciiText, Generator, Unit, signed } from './rebuild-asm';
import { DEBUG_INSIDE, DEBUG_SECTION } from './rebuild-format';

const MAX_EXACT = BigInt(2 ** 52);
const isDebug = (s: Section) => s.name.startsWith('.debug_') && s.type === SHT.PROGBITS && !(s.flags & SHF.ALLOC);

/** Assembly for the debug sections of the units with code in the patch; `sections` names those the table refers to. */
export function debugAsm(g: Generator, units: Unit[]): { asm: string[]; sections: string[] } {
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
    const labels = new Map<number, string>();
    const label = (sec: number) => {
      let l = labels.get(sec);
      if (l === undefined) labels.set(sec, (l = `hl.d.${u.idx}.${sec}`));
      return l;
    };
    for (const sec of debugSecs) {
      const data = elf.sectionContents(sec);
      const rela = elf.sections.find((r) => r.type === SHT.RELA && r.info === sec.index);
      const relocs = rela ? inOrder(elf.relocations(rela.name)) : [];
      const tombstone = sec.name === '.debug_ranges' || sec.name === '.debug_loc' ? 1 : 0;
      const out = [`\t.section ${sec.name},"",@progbits`, `${label(sec.index)}:`];
      let pos = 0;
      const text = new AsciiText(data);
      const bytes = (end: number) => {
        if (end > pos) text.lines(pos, end, out);
        pos = end;
      };
      for (const r of relocs) {
        const width = RELOC_8_BYTES.has(r.type) ? 8 : 4;
        if (r.offset < pos || r.offset + width > data.length) continue; // overlapping or outside: leave the bytes as they are
        bytes(r.offset);
        const dir = width === 8 ? '.quad' : '.long';
        const sym = u.b.syms[r.sym];
        const target = sym && sym.shndx > 0 && sym.shndx < 0xff00 ? elf.sections[sym.shndx] : undefined;
        // A Number when exact (nearly always: an offset into a section), else a BigInt.
        const base = sym && sym.type !== STT.SECTION ? sym.value : 0;
        const small = base < 2 ** 52 && r.addend >= -MAX_EXACT && r.addend <= MAX_EXACT;
        const off = small ? base + Number(r.addend) : BigInt(base) + r.addend;
        if (target && emitted.has(target.index)) {
          out.push(`\t${dir} ${label(target.index)}${signed(off)}`);
        } else {
          const a = width === 8 && r.type !== R_X86_64.DTPOFF64 /* a thread-local offset, not an address */ ? g.debugAddress(u, r.sym, r.addend) : undefined;
          if (a && 'internal' in a) {
            out.push(`\t.quad ${a.internal}${signed(a.off)}`);
            table.push(`\t.quad ${label(sec.index)} + ${r.offset}\n\t.quad 0\n\t.long ${sectionIndex(sec.name)}\n\t.long ${DEBUG_INSIDE}`);
          } else if (a) {
            out.push('\t.quad 0');
            table.push(`\t.quad ${label(sec.index)} + ${r.offset}\n\t.quad ${a.off}\n\t.long ${sectionIndex(sec.name)}\n\t.long ${a.ref}`);
          } else out.push(`\t${dir} ${tombstone}`);
        }
        pos = r.offset + width;
      }
      bytes(data.length);
      asm.push(out.join('\n'));
    }
  }
  if (table.length) asm.push(`\t.section ${DEBUG_SECTION},"",@progbits\n${table.join('\n')}`);
  return { asm, sections };
}

/** Relocations by offset (the assembler writes them so: sorted only when they are not). */
function inOrder<T extends { offset: number }>(relocs: T[]): T[] {
  for (let i = 1; i < relocs.length; i++) if (relocs[i].offset < relocs[i - 1].offset) return [...relocs].sort((a, b) => a.offset - b.offset);
  return relocs;
}
