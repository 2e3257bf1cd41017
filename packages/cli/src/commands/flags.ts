// hotload flags: the compiler and linker flags a hotpatchable build needs.
import type { Argv } from 'yargs';
import { Out } from '../output';

export const BUILD_FLAGS = {
  CFLAGS: '-fpatchable-function-entry=16,14',
  /** For `hotload diff`/`mkpatch --from` builds: one section per function and datum. */
  CFLAGS_DIFF: '-ffunction-sections -fdata-sections',
  LDFLAGS: '',
};

export const flagsCommand = {
  command: 'flags',
  describe: 'Print the CFLAGS a hotpatchable build needs (for Makefiles: CFLAGS += $(shell hotload flags --cflags))',
  builder: (y: Argv) => y.option('cflags', { type: 'boolean', default: false, describe: 'print only the CFLAGS value' }),
  run(argv: { cflags: boolean }, out: Out): number {
    if (out.json) out.doc(BUILD_FLAGS);
    else if (argv.cflags) out.line(BUILD_FLAGS.CFLAGS);
    else {
      out.line(`CFLAGS += ${BUILD_FLAGS.CFLAGS}`);
      out.line('# after linking each executable or library:');
      out.line('#   hotload post $@');
    }
    return 0;
  },
};
