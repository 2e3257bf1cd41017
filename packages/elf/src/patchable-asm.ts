// gcc's `__patchable_function_entries` sections, made right in its assembly
// output (for `hotload c++` / `hotload cc`).
//
// gcc 12 writes each function's pad address into
//   .section __patchable_function_entries,"awo",@progbits,<the file's FIRST function>
// that is: one section for the whole file, linked (SHF_LINK_ORDER) to the
// first function's section, and in no COMDAT group. When the linker keeps
// another file's copy of an inline or template function (a COMDAT group), it
// drops this file's copy, and the entries pointing into it make the link fail:
//   `.text._ZNSt6vector...' referenced in section `__patchable_function_entries'
//   of b.o: defined in discarded section
// (any C++ program that uses std::vector<std::string> in two files). clang
// writes one entry section per function, in the function's group.
//
// The fix, per entry: a local label at the function's pad (in the function's
// own section), the entry section linked to that label, and, for a function
// in a COMDAT group, the entry section put in the same group: it is kept or
// dropped with its function. GNU as takes "o" and "G" together (binutils 2.35+).

const PATCHABLE = /^\t\.section\t__patchable_function_entries,"awo",@progbits,\S+$/;
/** `.section NAME,"FLAGS",@progbits[,GROUP,comdat]` (the group part when FLAGS has G). */
const SECTION = /^\t\.section\t([^,\s]+)(?:,"([^"]*)"(?:,@\w+)?(?:,([^,\s]+),comdat)?)?/;

/** The assembly with every patchable-entry section linked to its own function's section and group. */
export function fixPatchableEntries(asm: string): { asm: string; entries: number; grouped: number } {
  const lines = asm.split('\n');
  const out: string[] = [];
  let group: string | undefined; // the COMDAT group of the section code is being emitted into
  let entries = 0;
  let grouped = 0;
  for (const line of lines) {
    if (PATCHABLE.test(line)) {
      const label = `.Lhotload_pfe${entries++}`;
      out.push(`${label}:`); // here, in the function's section, before the switch
      if (group !== undefined) {
        grouped++;
        out.push(`\t.section\t__patchable_function_entries,"awoG",@progbits,${label},${group},comdat`);
      } else {
        out.push(`\t.section\t__patchable_function_entries,"awo",@progbits,${label}`);
      }
      continue;
    }
    if (/^\t\.(text|data|bss)\s*$/.test(line)) group = undefined;
    else {
      const m = SECTION.exec(line);
      if (m && m[1] !== '__patchable_function_entries') group = m[2]?.includes('G') ? m[3] : undefined;
    }
    out.push(line);
  }
  return { asm: out.join('\n'), entries, grouped };
}
