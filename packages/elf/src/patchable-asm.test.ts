// gcc's patchable-entry sections rewritten per function: linked to the
// function's own pad, in its COMDAT group when it has one.
import { fixPatchableEntries } from './patchable-asm';

const GCC = [
  '\t.section\t.text._Z3fooi,"axG",@progbits,_Z3fooi,comdat',
  '\t.p2align 4',
  '\t.weak\t_Z3fooi',
  '\t.section\t__patchable_function_entries,"awo",@progbits,_Z3fooi',
  '\t.align 8',
  '\t.quad\t.LPFE1',
  '\t.section\t.text._Z3fooi,"axG",@progbits,_Z3fooi,comdat',
  '.LPFE1:',
  '\tnop',
  '\t.text',
  '\t.globl\tbar',
  '\t.section\t__patchable_function_entries,"awo",@progbits,_Z3fooi', // gcc 12: the file's first function, for every entry
  '\t.align 8',
  '\t.quad\t.LPFE2',
  '\t.text',
  '.LPFE2:',
].join('\n');

test('a COMDAT function\'s entry goes in its group; every entry is linked to its own function', () => {
  const r = fixPatchableEntries(GCC);
  expect(r.entries).toBe(2);
  expect(r.grouped).toBe(1);
  const lines = r.asm.split('\n');
  expect(lines.slice(3, 5)).toEqual(['.Lhotload_pfe0:', '\t.section\t__patchable_function_entries,"awoG",@progbits,.Lhotload_pfe0,_Z3fooi,comdat']);
  const at = lines.indexOf('.Lhotload_pfe1:');
  expect(lines[at - 1]).toBe('\t.globl\tbar'); // still in .text, at bar's pad
  expect(lines[at + 1]).toBe('\t.section\t__patchable_function_entries,"awo",@progbits,.Lhotload_pfe1');
});

test('assembly without patchable entries comes back unchanged', () => {
  const asm = '\t.text\n\t.globl\tf\nf:\n\tret\n';
  expect(fixPatchableEntries(asm)).toEqual({ asm, entries: 0, grouped: 0 });
});
