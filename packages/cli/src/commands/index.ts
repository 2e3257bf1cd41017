// The commands, in the order `hotload --help` lists them.
import type { Command } from '../index';
import { indexCommand } from './index-cmd';
import { checkCommand } from './check';
import { postCommand } from './post';
import { flagsCommand } from './flags';
import { attachCommand } from './attach';
import { mkpatchCommand } from './mkpatch';

export const COMMANDS: Command[] = [attachCommand, mkpatchCommand, indexCommand, checkCommand, postCommand, flagsCommand];
