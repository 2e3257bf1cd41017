// The commands, in the order `hotload --help` lists them.
import type { Command } from '../index';
import { indexCommand } from './index-cmd';
import { checkCommand } from './check';
import { postCommand } from './post';
import { flagsCommand } from './flags';

export const COMMANDS: Command[] = [indexCommand, checkCommand, postCommand, flagsCommand];
