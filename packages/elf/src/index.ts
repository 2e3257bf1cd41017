// @hotload/elf: read ELF files, index their patchable pads, post them.
export * from './read-elf';
export * from './relocations';
export * from './index-pads';
export * from './gcc-names';
export * from './post-elf';
export * from './dwarf';
export * from './dwarf-lines';
export * from './dwarf-inlines';
export * from './dwarf-types';
export * from './eh-frame';
export * from './patchable-asm';
export * from './demangle';
export * from './jit-object';
