// The commands, in the order `hotload --help` lists them.
import type { Command } from '../index';
import { indexCommand } from './index-cmd';
import { checkCommand } from './check';
import { postCommand } from './post';
import { flagsCommand } from './flags';
import { attachCommand } from './attach';
import { mkpatchCommand } from './mkpatch';
import { revertCommand } from './revert';
import { statusCommand } from './status';
import { psCommand } from './ps';
import { rolloutCommand } from './rollout';
import { diffCommand } from './diff';
import { watchCommand } from './watch';
import { ccCommand, cxxCommand, launchCommand } from './cc';

export const COMMANDS: Command[] = [attachCommand, revertCommand, statusCommand, psCommand, rolloutCommand, watchCommand, mkpatchCommand, diffCommand, indexCommand, checkCommand, postCommand, flagsCommand, ccCommand, cxxCommand, launchCommand];
