// hotload watch --pid <pid>[,<pid>...|name] [--build "make"] [paths...]: rebuild on save and patch the running processes.
import type { Argv } from 'yargs';
import { HotloadError, WatchEvent, isHotloadError, resolveTargets, watch } from '@hotload/api';
import { Out, onInterrupt } from '../output';
import { wholeNumber } from '../args';

interface Args {
  pid: string;
  build: string;
  compile: boolean;
  paths?: string[];
  objects?: string;
  target?: string;
  interval?: number;
  max?: number;
  follow: boolean;
}

const ms = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Math.round(n)} ms`);
const clock = () => new Date().toTimeString().slice(0, 8);

export const watchCommand = {
  command: 'watch [paths..]',
  valueOptions: ['build'],
  describe: 'Rebuild on every save and patch the running processes with what changed',
  builder: (y: Argv) =>
    y
      .positional('paths', { type: 'string', array: true, describe: 'source files or directories to watch (default: the current directory)' })
      .option('pid', { type: 'string', demandOption: true, describe: 'the process to keep patched: a pid, pids separated by commas, or a process name (all running one build)' })
      .option('build', { type: 'string', default: 'make', describe: 'shell command that rebuilds the objects (run in the current directory) when the saved files cannot be compiled directly' })
      .option('compile', { type: 'boolean', default: true, describe: 'compile the saved sources directly, each object with its own command line (compile_commands.json, or make\'s for the object), skipping the build and the link; --no-compile runs --build on every save' })
      .option('objects', { type: 'string', describe: 'directory where the build leaves its object files (default: the current directory)' })
      .option('target', { type: 'string', describe: 'the file the process runs that is patched (default: its executable; name a library to patch that)' })
      .option('interval', { type: 'string', coerce: wholeNumber('--interval', 1), describe: 'how often to look for saved files besides inotify (ms; default 1000, or 100 where inotify does not work)' })
      .option('follow', { type: 'boolean', default: false, describe: 'when the processes exit, wait for the program to be started again and go on with the new process (its build taken anew)' })
      .option('max', { type: 'string', coerce: wholeNumber('--max', 1), describe: 'stop after this many patches' })
      .example('$0 watch --pid $(pidof server) src/', 'on each save under src/: compile the saved files, diff, patch')
      .example('$0 watch --pid server --build "make -j8"', 'keep every process named server patched')
      .example('$0 watch --pid server --follow', 'and after a restart (a change that needs one), the new server process')
      .epilog(
        'Build with `hotload flags --diff` (one section per function and datum) and keep the objects. ' +
          'Start watch while the objects are those of the running build; it copies them aside. ' +
          'Ctrl-C (or SIGTERM) stops watching and leaves the processes patched. ' +
          'With several processes, one that exits is dropped and watch goes on with the others; it stops when none is left (with --follow, waits). ' +
          'With --json, one JSON object per line and event (ready, change, stale-modules, build-failed, relink-failed, no-change, refused, patched, exited, waiting, stopped); every watch that was ready ends with one stopped event, its last line. ' +
          'Exit status: 0 after Ctrl-C (or --max patches), 5 when the processes have exited (without --follow).',
      ),
  async run(argv: Args, out: Out): Promise<number> {
    if (!argv.pid) throw new HotloadError('USAGE', '--pid needs a process id, a comma-separated list, or a name');
    const pids = resolveTargets(argv.pid);
    const ac = new AbortController();
    onInterrupt(() => ac.abort());
    const show = (e: WatchEvent) => {
      if (out.json) {
        process.stdout.write(JSON.stringify(e) + '\n');
        return;
      }
      switch (e.event) {
        case 'ready':
          out.line(`${out.dim(clock())} watching ${e.watching.join(', ')} for process${e.pids.length === 1 ? '' : 'es'} ${e.pids.join(', ')} (${e.objects} object files copied aside); Ctrl-C to stop`);
          for (const w of e.warnings) out.line(`  ${out.yellow('warning')}: ${w}`);
          break;
        case 'change':
          out.progress(`${clock()} ${e.files.join(', ')} changed: compiling...`);
          break;
        case 'build-failed':
          out.progress('');
          out.line(`${out.dim(clock())} ${out.red('build failed')} (exit ${e.status}, ${ms(e.buildMs)}); the process runs what it ran:`);
          for (const l of e.output.split('\n').slice(-20)) out.line(`  ${l}`);
          break;
        case 'relink-failed':
          out.line(`${out.dim(clock())} ${out.yellow('warning')}: the build command, relinking the program after the compile, failed (exit ${e.status}); the process is patched, but the program on disk is not up to date:`);
          for (const l of e.output.split('\n').slice(-20)) out.line(`  ${l}`);
          break;
        case 'no-change':
          out.progress('');
          if (e.otherModules) out.line(`${out.dim(clock())} ${e.compiled ? 'compiled' : 'rebuilt'} in ${ms(e.buildMs)}: ${out.yellow('not patched')}: ${e.otherModules.join(', ')} belong${e.otherModules.length === 1 ? 's' : ''} to another module than the one watched; watch it with --target <its file>`);
          else out.line(`${out.dim(clock())} ${e.compiled ? 'compiled' : 'rebuilt'} in ${ms(e.buildMs)}: no code changed`);
          break;
        case 'refused':
          out.progress('');
          out.line(`${out.dim(clock())} ${out.red('not patched')}: ${e.error.code}: ${e.error.message}`);
          for (const d of e.error.details) out.line(`  - ${d}`);
          out.line(`  hint: ${e.error.hint}`);
          break;
        case 'patched': {
          out.progress('');
          const cxx = (xs: string[]) => xs.map((x) => e.demangled[x] ?? x).join(', ');
          out.line(
            `${out.dim(clock())} ${out.green('patched')} ${cxx(e.changed.filter((f) => !e.added.includes(f))) || cxx(e.replaced)}` +
              `${e.changed.some((f) => e.added.includes(f)) ? ` (+ new ${cxx(e.changed.filter((f) => e.added.includes(f)))})` : ''} in ${ms(e.totalMs)}` +
              ` (${e.compiled ? `compile ${e.compiled.length === 1 ? e.compiled[0] : `${e.compiled.length} objects`}` : 'build'} ${ms(e.buildMs)}, patch ${ms(e.patchMs)}, apply ${ms(e.applyMs)}; ${e.pids.length > 1 || e.failed.length ? `${e.pids.length} processes, each ` : 'process '}stopped ${e.stoppedMs.toFixed(2)} ms${e.pids.length > 1 ? ' at most' : ''})`,
          );
          for (const f of e.failed) out.line(`  ${out.red('not patched')}: process ${f.pid}: ${f.error.code}: ${f.error.message} (hint: ${f.error.hint})`);
          for (const a of e.active) out.line(`  ${out.yellow('note')}: ${e.demangled[a.function] ?? a.function} is running on thread ${a.thread}${e.pids.length > 1 ? ` of process ${a.pid}` : ''}: that call keeps the old code; the change shows at its next call`);
          break;
        }
        case 'exited':
          out.line(`${out.dim(clock())} process ${e.pid} exited${e.left.length ? `; still watching process${e.left.length === 1 ? '' : 'es'} ${e.left.join(', ')}` : argv.follow ? '' : '; no process left: stopping'}`);
          break;
        case 'stale-modules':
          for (const m of e.modules)
            out.line(
              `${out.dim(clock())} ${out.yellow('warning')}: ${m.module} (in process${m.pids.length === 1 ? '' : 'es'} ${m.pids.join(', ')}) was built from ${m.files.join(', ')} and keeps its old code: ` +
                'no object file of it is here to patch it from; restart the process, or build it through object files and watch it with --target',
            );
          break;
        case 'stopped':
          if (e.error) break; // the error itself is printed next, on stderr
          for (const p of e.processes)
            out.line(`process ${p.pid} keeps ${p.patches.length} patch${p.patches.length === 1 ? '' : 'es'} (${p.replaced.map((f) => e.demangled[f] ?? f).join(', ')}); undo with: hotload revert ${p.pid} --all`);
          if (!e.processes.length && e.reason !== 'exited') out.line('no process keeps a patch of this watch');
          break;
        case 'waiting':
          out.line(`${out.dim(clock())} waiting for ${e.exe} to be started again (--follow)`);
          break;
      }
    };
    let stopped = false;
    let r;
    try {
      r = await watch({ pids, build: argv.build, compile: argv.compile, paths: argv.paths, objects: argv.objects, target: argv.target, intervalMs: argv.interval, maxPatches: argv.max, follow: argv.follow, signal: ac.signal, onEvent: (e) => ((stopped ||= e.event === 'stopped'), show(e)) });
    } catch (e) {
      // With --json the `stopped` event carries the error and stays the last line; its exit status is the error's.
      if (out.json && stopped) return isHotloadError(e) ? e.exitCode : new HotloadError('INTERNAL', String(e)).exitCode;
      throw e;
    }
    return r.reason === 'exited' ? 5 : 0;
  },
};
