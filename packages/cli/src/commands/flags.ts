// hotload flags: the compiler and linker flags a hotpatchable build needs.
import type { Argv } from 'yargs';
import { Out } from '../output';

export const BUILD_FLAGS = {
  CFLAGS: '-fpatchable-function-entry=16,14',
  /**
   * For `hotload diff`/`mkpatch --from`/`watch` builds: one section per
   * function and datum, and the types (-g, not -g1) to compare layouts with.
   */
  CFLAGS_DIFF: '-g -ffunction-sections -fdata-sections',
  /** Keeps the relocations in the linked file, for `hotload diff` on programs. */
  LDFLAGS_DIFF: '-Wl,--emit-relocs',
};

export const flagsCommand = {
  command: 'flags',
  describe: 'Print the CFLAGS a hotpatchable build needs (for Makefiles: CFLAGS += $(shell hotload flags --cflags))',
  builder: (y: Argv) =>
    y
      .option('cflags', { type: 'boolean', default: false, describe: 'print only the CFLAGS value' })
      .option('diff', { type: 'boolean', default: false, describe: 'add the flags `hotload watch`, `mkpatch --from` and `diff` need' }),
  run(argv: { cflags: boolean; diff: boolean }, out: Out): number {
    const cflags = argv.diff ? `${BUILD_FLAGS.CFLAGS} ${BUILD_FLAGS.CFLAGS_DIFF}` : BUILD_FLAGS.CFLAGS;
    if (out.json) out.doc(BUILD_FLAGS);
    else if (argv.cflags) out.line(cflags);
    else if (argv.diff) {
      out.line(`CFLAGS += ${cflags}`);
      out.line('# keep the object files: `hotload watch` and `mkpatch --from` read them');
      out.line(`# LDFLAGS += ${BUILD_FLAGS.LDFLAGS_DIFF}   # only for \`hotload diff\` on linked programs`);
      out.line('# CMake: add_compile_options(' + cflags + ')');
    } else {
      out.line(`CFLAGS += ${BUILD_FLAGS.CFLAGS}`);
      out.line('# after linking each executable or library:');
      out.line('#   hotload post $@');
    }
    if (!out.json && !argv.cflags) out.line('# C++ with g++: CXX = hotload c++   (g++ alone cannot link inline functions or templates used in two files)');
    return 0;
  },
};
