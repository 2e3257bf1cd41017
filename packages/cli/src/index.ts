// The hotload command line: a thin layer of yargs commands over the packages.
// This is the only place in hotload that calls process.exit; everything else
// throws HotloadError, which is printed here with its code and hint and mapped
// to the exit status in the errors table (README.md, "Exit codes").

import * as fs from 'fs';
import * as path from 'path';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { EXIT, HotloadError, isHotloadError } from '@hotload/errors';
import { errorLines, makeOut, Out, takeInterrupt } from './output';
import { COMMANDS } from './commands';
import { runCompiler } from './commands/cc';

export interface Command {
  command: string;
  describe: string;
  builder: (y: Argv) => Argv<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** String options whose value may start with `-`, taken whole (see joinValues). */
  valueOptions?: string[];
  run(argv: any, out: Out): number | Promise<number>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export function reportError(e: unknown, json: boolean): number {
  const err = isHotloadError(e) ? e : new HotloadError('INTERNAL', e instanceof Error ? e.stack ?? e.message : String(e));
  if (json) {
    process.stdout.write(JSON.stringify({ error: err.toJSON() }, null, 2) + '\n');
  } else {
    const color = !!process.stderr.isTTY && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
    const red = (s: string) => (color ? `\x1b[31m${s}\x1b[0m` : s);
    const { rest } = errorLines(err);
    process.stderr.write(`${red(`error ${err.code}`)}: ${err.message}\n${rest.map((l) => `${l}\n`).join('')}`);
  }
  return err.exitCode;
}

/**
 * Options whose values often start with `-` (compiler flags, shell commands),
 * named by the command that takes them (`valueOptions`): `mkpatch --cflags
 * "-I a -DX"` is read as `--cflags="-I a -DX"` (yargs alone takes the value for
 * an option of its own and fails). Per command, because the same name is a
 * switch elsewhere: `flags --cflags --diff` is two switches.
 */
export function joinValues(args: string[]): string[] {
  const cmd = COMMANDS.find((c) => c.command.split(' ')[0] === args[0]);
  const takesValue = new Set((cmd?.valueOptions ?? []).map((o) => `--${o}`));
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--') {
      out.push(...args.slice(i));
      break;
    }
    if (takesValue.has(args[i]) && i + 1 < args.length) out.push(`${args[i]}=${args[++i]}`);
    else out.push(args[i]);
  }
  return out;
}

/** This hotload's version (packages/cli/package.json; the published package writes its own there). */
export function version(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.resolve(__dirname, '../package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export async function main(args: string[]): Promise<void> {
  let code: number = EXIT.ok;
  // `hotload status 123 | head -1`: a closed pipe ends output quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(code);
    throw e;
  });
  // Ctrl-C or SIGTERM while a patch goes in: the work is synchronous, so the
  // handler runs once it has finished or rolled back (and its result is
  // printed); then exit 130/143, once that output is written.
  const onSignal = (sig: NodeJS.Signals) => {
    if (!takeInterrupt(sig)) exitWhenWritten(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // `hotload cc ...` / `hotload c++ ...`: every argument is the compiler's, not ours.
  if ((args[0] === 'cc' || args[0] === 'c++') && !(args.length === 2 && args[1] === '--help')) {
    exitWhenWritten(runCompiler(args[0] === 'cc' ? 'c' : 'c++', args.slice(1)));
    return;
  }
  // `hotload launch <compiler> ...`: the same, as a build system's compiler launcher.
  if (args[0] === 'launch' && args.length > 1 && args[1] !== '--help') {
    exitWhenWritten(runCompiler(args[1], args.slice(2)));
    return;
  }
  // `hotload help attach` is `hotload attach --help`.
  if (args[0] === 'help') args = args.length > 1 ? [args[1], '--help'] : ['--help'];
  args = joinValues(args);
  const json = args.includes('--json');
  let parser = yargs(args)
    .scriptName('hotload')
    .usage('$0 <command> [options]\n\nLive-patch running native processes built with -fpatchable-function-entry=16,14.')
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable output on stdout' })
    .demandCommand(1, 'Name a command; `hotload --help` lists them.')
    .strict()
    .recommendCommands()
    .epilog('Exit codes: 0 ok, 1 internal error, 2 usage or invalid rollout plan, 3 bad ELF file, 4 unpatchable, 5 process/ptrace, 6 patch (or its hook), 7 timeout, 8 build, 9 nothing to patch, 10 already applied, 11 rollout partial, 12 rollout failed (a process whose health check failed: HEALTH_CHECK_FAILED), 130/143 interrupted (SIGINT/SIGTERM).')
    .help()
    .alias('h', 'help')
    .version('version', 'print hotload\'s version', version())
    .completion('completion', 'print a bash completion script (add `source <(hotload completion)` to ~/.bashrc)')
    .wrap(Math.min(100, process.stdout.columns || 100))
    .fail((msg, err) => {
      // yargs wraps what an option's coerce threw (ours: a USAGE error naming the value) in a YError.
      if (err && !isHotloadError(err) && err.name === 'YError') throw new HotloadError('USAGE', err.message);
      throw err ?? new HotloadError('USAGE', msg);
    });
  for (const c of COMMANDS) {
    parser = parser.command(c.command, c.describe, c.builder, async (argv) => {
      code = await c.run(argv, makeOut(!!argv.json));
    });
  }
  try {
    await parser.parseAsync();
  } catch (e) {
    code = reportError(e, json);
  }
  // A signal that came during synchronous work is pending in the event loop:
  // let its handler run (and exit 130/143) before exiting with the command's status.
  setImmediate(() => exitWhenWritten(code));
}

/**
 * Exit once stdout and stderr have been handed to the kernel whole. Through a
 * pipe whose reader is slower than us, Node keeps what the pipe cannot take
 * yet; an immediate process.exit() dropped it (a 1 MB `--json` arrived as
 * 64 KiB, with exit status 0).
 */
function exitWhenWritten(code: number): void {
  let pending = 2;
  const done = () => {
    if (--pending === 0) process.exit(code);
  };
  for (const s of [process.stdout, process.stderr]) {
    if (s.writableLength === 0) done();
    else s.write('', done);
  }
}
