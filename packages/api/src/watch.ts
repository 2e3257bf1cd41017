// `hotload watch --pid <pid>[,<pid>...|name]`: the edit-save-live loop.
//
// At start, the build the process runs is copied aside (its object files and
// the program itself, from /proc/PID/exe unless --target names a library), so
// rebuilding cannot overwrite it. Then, on every save:
//   compile the saved sources (compile.ts; or the build command when that
//   cannot be done) -> mkpatch --from <that copy> --to <the build's objects>
//   -> attach,
// and one event per outcome. Each patch is made against the original build and
// replaces every function changed so far (those of earlier patches too), so a
// function edited back, or a helper added earlier and edited again, is always
// current; data added by an earlier patch is found in that patch when the next
// one is loaded, so its value carries on. Failed builds and refused changes are
// reported, and the process keeps running what it ran.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HotloadError, isHotloadError } from '@hotload/errors';
import { attach, checkAttach, cleanStaged, modules, status } from '@hotload/injector';
import { ElfFile, STT, demangle, lineTableFiles } from '@hotload/elf';
import { Build, changesNothing, diffObjectSets, functionOfPart, mkpatchFromBuilds, objectFiles, refuseIfNotRunning, sameFile } from '@hotload/patch';
import { sleep } from './sleep';
import { CompileStep, DirectCompiler, outdateObjects, runShell, runSteps, unitSources } from './compile';
import { Runner, Spawner } from './spawner';

export interface WatchOptions {
  /** The processes to keep patched: all must run the same build (those that do not are left out, with a warning). */
  pids: number[];
  /** Shell command that rebuilds (run in `cwd`); default `make`. */
  build?: string;
  /**
   * Compile the saved sources directly, each object with its own command
   * (compile_commands.json, or make's for the object), skipping the build
   * command and the link; the build command runs when that cannot be done
   * (compile.ts says when). Default true.
   */
  compile?: boolean;
  /** Files or directories whose changes trigger a rebuild; default `cwd`. */
  paths?: string[];
  /** Where the build leaves its object files; default `cwd`. */
  objects?: string;
  /** The file the process runs that is patched; default /proc/PID/exe. */
  target?: string;
  cwd?: string;
  /** Poll interval for source changes (ms); default 100, or 1000 when inotify watches every path. */
  intervalMs?: number;
  /**
   * When the processes exit, wait for the program to be started again (a
   * process running the same file), take its build anew, and go on watching
   * it. Default: stop.
   */
  follow?: boolean;
  /** Stop after this many patches (tests, scripts); default: run until aborted. */
  maxPatches?: number;
  signal?: AbortSignal;
  onEvent?: (e: WatchEvent) => void;
}

export type WatchEvent =
  | { event: 'ready'; pids: number[]; target: string; objects: number; watching: string[]; snapshot: string; warnings: string[] }
  | { event: 'change'; files: string[] }
  | { event: 'build-failed'; status: number | null; output: string; buildMs: number; compiled?: string[] }
  /** After a direct compile the build command relinks the program in the background; it failed (the patch stands). */
  | { event: 'relink-failed'; status: number | null; output: string; buildMs: number }
  /** `otherModules`: changed objects that belong to another module than the watched target (watch that one with --target). */
  | { event: 'no-change'; buildMs: number; compiled?: string[]; otherModules?: string[] }
  | { event: 'refused'; error: ErrorDoc; buildMs: number; compiled?: string[] }
  | {
      event: 'patched';
      changed: string[];
      added: string[];
      replaced: string[];
      patch: string;
      /** The processes now running it, and those where attach failed (they run what they ran). */
      pids: number[];
      failed: { pid: number; error: ErrorDoc }[];
      /** Compiling the saved sources (the objects in `compiled`), or the build command when `compiled` is absent. */
      buildMs: number;
      /** The objects compiled directly (relative to the objects directory); absent: the build command ran. */
      compiled?: string[];
      /** Of buildMs, the compile commands (or the build command) themselves (buildMs also waits for the last save's relink, and asks make for commands it did not have yet). */
      compilerMs: number;
      patchMs: number;
      /** Attach, all processes in turn. */
      applyMs: number;
      totalMs: number;
      /** The longest all-threads stop of any process. */
      stoppedMs: number;
      /** Replaced functions that were running: those calls finish in the old code (a main loop never takes the change). */
      active: { pid: number; function: string; thread: number; depth: number }[];
      /** The C++ names of the mangled names above. */
      demangled: Record<string, string>;
    }
  /** A watched process exited: it is dropped; `left` are the processes still watched (none: watch stops, or with `follow` waits). */
  | { event: 'exited'; pid: number; left: number[] }
  /** With `follow`: every process exited; waiting for the program to be started again. */
  | { event: 'waiting'; exe: string }
  /**
   * Modules the processes run, other than the one watched, that were built
   * from a saved file (their DWARF names it) and that no object file here
   * comes from (a module compiled straight from its source to a `.so`): no
   * watch can patch them, and they keep their old code until restarted.
   */
  | { event: 'stale-modules'; modules: { module: string; pids: number[]; files: string[] }[] }
  /**
   * The last event of every watch that was ready, whatever ended it (Ctrl-C,
   * SIGTERM, the processes' exit, --max, an error: then `error`): what each
   * process still running keeps applied, and the command that reverts it.
   */
  | { event: 'stopped'; reason: WatchSummary['reason'] | 'failed'; processes: { pid: number; patches: string[]; replaced: string[] }[]; demangled: Record<string, string>; revert?: string; error?: ErrorDoc };

type ErrorDoc = { code: string; message: string; hint: string; details: string[] };

export interface WatchSummary {
  /** The processes watched last (after a restart with `follow`, the new ones). */
  pids: number[];
  /** The patches they run. */
  patches: string[];
  replaced: string[];
  /** Why the loop ended. */
  reason: 'aborted' | 'exited' | 'max-patches';
}

const SOURCE = /\.(c|h|cc|cpp|cxx|hh|hpp|hxx|inc|s|S)$/;

/** Every source file under the watched paths, with a stamp that changes on save. */
function stamps(paths: string[]): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (p: string, depth: number) => {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      if (depth > 8) return;
      for (const e of fs.readdirSync(p)) if (!e.startsWith('.') && e !== 'node_modules') visit(path.join(p, e), depth + 1);
    } else if (depth === 0 || SOURCE.test(p)) out.set(p, `${st.mtimeMs}:${st.size}:${st.ino}`);
  };
  for (const p of paths) visit(p, 0);
  return out;
}

const stampOf = (st: fs.Stats) => `${st.mtimeMs}:${st.size}:${st.ino}`;

/** The stamp of each object file of `dir`, by relative path. */
function objectStamps(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [rel, file] of objectFiles(dir)) {
    try {
      out.set(rel, stampOf(fs.statSync(file)));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/**
 * Make `to` hold the object files of `from`, copying only those whose stamp
 * (mtime, size, inode) changed since the last sync with `seen` (all of them
 * with an empty one), and removing those gone. Returns how many there are.
 * With `read`, the stamps the objects had when the diff that was just acted
 * on read them: an object written since (a build running meanwhile) is not
 * what the process runs, and is left out (the copy keeps what it had, so the
 * next save finds that object changed).
 */
function syncObjects(from: string, to: string, seen: Map<string, string>, read?: Map<string, string>): number {
  const objs = objectFiles(from);
  for (const [rel, file] of objs) {
    const stamp = stampOf(fs.statSync(file));
    if (seen.get(rel) === stamp) continue;
    if (read && read.get(rel) !== stamp) continue;
    fs.mkdirSync(path.dirname(path.join(to, rel)), { recursive: true });
    fs.copyFileSync(file, path.join(to, rel));
    seen.set(rel, stamp);
  }
  for (const rel of [...seen.keys()].filter((r) => !objs.has(r))) {
    fs.rmSync(path.join(to, rel), { force: true });
    seen.delete(rel);
  }
  return objs.size;
}

/**
 * A patch made and thrown away before `ready`: one function of the running
 * build replaced by its own code, and checked against the process as attach
 * checks it (files and /proc only; the process is not stopped or traced).
 * The first save then finds this code compiled by V8 rather than cold: on
 * Lua, about 60 ms less to make its patch and 40 ms less to apply it. Best
 * effort: a failure here is not reported (the first save meets any real
 * problem and reports it), and nothing of it stays.
 */
async function rehearse(pid: number, orig: string, program: string, snap: string, run: Runner, redirected: ReadonlySet<string>): Promise<void> {
  const out = path.join(snap, 'rehearsal.so');
  try {
    const inProgram = new Set(ElfFile.open(program).symbols('.symtab').filter((s) => s.type === STT.FUNC && s.shndx !== 0).map((s) => s.name));
    for (const [rel, file] of objectFiles(orig)) {
      const fn = [...Build.of(file).items(STT.FUNC)].find(([, f]) => !f.local && f.size > 0 && inProgram.has(f.name));
      if (!fn) continue;
      await mkpatchFromBuilds({ from: orig, to: orig, target: program, out, also: { [fn[0]]: rel }, redirected, run });
      checkAttach(pid, out);
      cleanStaged(); // the staging directory's housekeeping, done once per run: now rather than in the first save's attach
      return;
    }
  } catch {
    /* only a warm-up */
  } finally {
    fs.rmSync(out, { force: true });
  }
}

/** The functions of `program` that process `pid` runs from a patch now (by symbol name: a rebuild patch names a static `f@file.c`). */
function patchedFunctions(pid: number, program: string): ReadonlySet<string> {
  const mine = path.basename(program);
  return new Set(status(pid).functions.filter((f) => path.basename(f.module) === mine && f.stack.length > 0).map((f) => f.name.split('@')[0]));
}

/** The path of the program a process runs ('' when unknown). */
function exeOf(pid: number): string {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
  } catch {
    return '';
  }
}

/** Wait until processes run the program at `exe` (its path), and return them; [] on abort. */
async function waitForProgram(exe: string, signal?: AbortSignal): Promise<number[]> {
  while (!signal?.aborted) {
    const found = fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid && exeOf(Number(e)) === exe).map(Number);
    if (found.length) return found.sort((a, b) => a - b);
    await sleep(200, signal);
  }
  return [];
}

const msSince = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6;

/** What a loaded module's DWARF says it was built from: its units' main sources, and every file its line tables name. */
interface BuiltFrom {
  units: string[];
  files: Set<string>;
}
/** By the module's path and inode as the process maps it: read once per file version. */
const builtFromCache = new Map<string, BuiltFrom>();
function builtFrom(file: string, key: string): BuiltFrom {
  let b = builtFromCache.get(key);
  if (b) return b;
  b = { units: [], files: new Set() };
  try {
    const elf = ElfFile.open(file);
    b.files = new Set(lineTableFiles(elf));
    if (b.files.size) b.units = unitSources(file, path.dirname(file));
  } catch {
    /* not an ELF file we can read: it names nothing */
  }
  builtFromCache.set(key, b);
  return b;
}

const realOf = (p: string) => {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
};

export async function watch(opts: WatchOptions): Promise<WatchSummary> {
  const emit = opts.onEvent ?? (() => undefined);
  const cwd = path.resolve(opts.cwd ?? process.cwd());
  const objectsDir = path.resolve(cwd, opts.objects ?? '.');
  const paths = (opts.paths?.length ? opts.paths : ['.']).map((p) => path.resolve(cwd, p));
  const build = opts.build ?? 'make';
  if (opts.pids.length === 0) throw new HotloadError('USAGE', 'name at least one process to patch');
  for (const p of opts.pids) if (!fs.existsSync(`/proc/${p}`)) throw new HotloadError('PID_NOT_FOUND', `no process with pid ${p}`);
  const pid = opts.pids[0];
  for (const p of paths) if (!fs.existsSync(p)) throw new HotloadError('FILE_NOT_FOUND', `${p}: no such file or directory to watch`);

  // The running build, copied aside (again for the new process after a restart, with `follow`).
  let snap = '';
  let orig = '';
  let last = '';
  let targetCopy = '';
  let redirected: ReadonlySet<string> = new Set();
  let pids: number[] = [];
  const replaced = new Map<string, string>(); // function -> its object file
  const patches: string[] = [];
  // Per process, the patches this watch applied to it and the functions they replace (for the `stopped` event).
  const applied = new Map<number, { patches: string[]; replaced: Set<string> }>();
  const lastStamps = new Map<string, string>(); // object file -> its stamp when copied to `last`
  let startStamps = new Map<string, string>(); // the sources when the build was taken (begin)
  const exePath = exeOf(pid);
  // Starts the compiler, make's dry runs, the patch's link and the relink for
  // less than this process would (spawner.ts); closed when watch ends.
  const spawner = new Spawner();
  const begin = async (procs: number[]) => {
    const first = procs[0];
    snap = fs.mkdtempSync(path.join(os.tmpdir(), `hotload-watch-${first}-`));
    orig = path.join(snap, 'running');
    last = path.join(snap, 'last');
    const targetSrc = opts.target ? path.resolve(cwd, opts.target) : `/proc/${first}/exe`;
    targetCopy = path.join(snap, path.basename(opts.target ?? (exeOf(first) || 'program')));
    try {
      fs.copyFileSync(targetSrc, targetCopy);
    } catch (e) {
      throw new HotloadError('FILE_UNREADABLE', `cannot copy ${targetSrc}: ${(e as Error).message}`);
    }
    const nObjects = syncObjects(objectsDir, orig, new Map());
    lastStamps.clear();
    syncObjects(objectsDir, last, lastStamps);
    // The objects copied aside must be the build the process runs: every
    // function the target has is its code, except those the process runs from
    // a patch (watch started again on a patched process), and data its size.
    redirected = patchedFunctions(first, targetCopy);
    try {
      refuseIfNotRunning(orig, targetCopy, ElfFile.open(targetCopy), redirected);
    } catch (e) {
      fs.rmSync(snap, { recursive: true, force: true });
      throw e;
    }
    const warnings = checkBuild(first, targetSrc);
    // Every process must run the build copied aside (the first one's).
    const buildId = ElfFile.open(targetCopy).buildId();
    pids = [first];
    for (const p of procs.slice(1)) {
      let id: string | undefined;
      try {
        id = ElfFile.open(opts.target ? targetSrc : `/proc/${p}/exe`).buildId();
      } catch {
        id = undefined;
      }
      if (opts.target || id === buildId) pids.push(p);
      else warnings.push(`process ${p} runs another build than process ${first} (build-id ${id ?? 'none'}); it is left out`);
    }
    pids = [...new Set(pids)];
    replaced.clear();
    patches.length = 0;
    applied.clear();
    // The sources as they are now, taken before `ready` goes out: a save made
    // the moment someone reads it is a change, not the starting point (taken
    // after, such a save was lost under load).
    startStamps = stamps(paths);
    // Each save compares the build's objects with both copies; an object
    // no save changed is found the same by its stamps alone once it has
    // been read and compared, which is done now rather than at the first save.
    const built = objectFiles(objectsDir);
    for (const copy of [orig, last]) for (const [rel, file] of objectFiles(copy)) if (built.has(rel)) sameFile(file, built.get(rel)!);
    await rehearse(first, orig, targetCopy, snap, spawner.run, redirected);
    staleModules([]); // each module's DWARF read now, not at the first save
    emit({ event: 'ready', pids, target: targetCopy, objects: nObjects, watching: paths, snapshot: snap, warnings });
  };
  /** The copies of the build go; the patches stay while a process runs them (it loaded its own copies). */
  const end = (processGone: boolean) => {
    fs.rmSync(orig, { recursive: true, force: true });
    fs.rmSync(last, { recursive: true, force: true });
    if (patches.length === 0 || processGone) fs.rmSync(snap, { recursive: true, force: true });
  };
  const summary = (reason: WatchSummary['reason']): WatchSummary => ({ pids, patches: [...patches], replaced: [...replaced.keys()].sort(), reason });

  /**
   * Warnings about the objects on disk as the build of the running process
   * `p`, whose patched file is `program` (/proc/PID/exe: the file it runs,
   * even one replaced since by a relink).
   */
  function checkBuild(p: number, program: string): string[] {
    const warnings: string[] = [];
    // Objects written after the file the process runs was linked are not
    // that file's objects, whenever the process started (a worker forked
    // after a rebuild runs the file of before it). refuseIfNotRunning has
    // compared their code with the file's, relocated fields set aside; what
    // those fields reach (a string, a table) and initial values are not
    // compared: changed there, the process keeps the old ones and no save
    // patches them in. (1 s: file systems with coarse times.)
    const linked = fs.statSync(program).mtimeMs;
    const newer = [...objectFiles(objectsDir).entries()].filter(([, f]) => fs.statSync(f).mtimeMs > linked + 1000).map(([r]) => r);
    const noSections: string[] = [];
    const noPads: string[] = [];
    for (const [rel, file] of objectFiles(orig)) {
      const b = Build.of(file);
      if (b.syms.some((x) => x.type === STT.FUNC && x.shndx > 0 && b.elf.sections[x.shndx]?.name === '.text' && x.size > 0)) noSections.push(rel);
      if (b.syms.some((x) => x.type === STT.FUNC && x.shndx > 0) && !b.elf.section('__patchable_function_entries')) noPads.push(rel);
    }
    const some = (l: string[]) => `${l.slice(0, 5).join(', ')}${l.length > 5 ? `, and ${l.length - 5} more` : ''}`;
    if (noSections.length) warnings.push(`built without -ffunction-sections (${some(noSections)}): changes in them will be refused; build with \`hotload flags --diff\``);
    if (noPads.length) warnings.push(`built without -fpatchable-function-entry (${some(noPads)}): their functions cannot be patched`);
    if (newer.length) warnings.push(`object files newer than the program process ${p} runs (${some(newer)}): built after it was linked; their code is its code (checked), but their constants and initial values (a string, a table) are not checked: if those changed, the process keeps the old ones and no save patches them in; restart it to be sure`);
    return warnings;
  }

  /**
   * The last event: what stays applied in each process still running (each
   * patch this watch applied there stays; the process loaded its own copy).
   */
  const stopped = (reason: WatchSummary['reason'] | 'failed', error?: unknown): WatchEvent => {
    const processes = [...applied]
      .filter(([p, a]) => a.patches.length > 0 && fs.existsSync(`/proc/${p}`))
      .map(([p, a]) => ({ pid: p, patches: [...a.patches], replaced: [...a.replaced].sort() }));
    const who = processes.map((x) => x.pid).join(',');
    return {
      event: 'stopped',
      reason,
      processes,
      demangled: Object.fromEntries(demangle(processes.flatMap((x) => x.replaced))),
      ...(processes.length ? { revert: `hotload revert ${who} --all` } : {}),
      ...(error !== undefined ? { error: errorDoc(error) } : {}),
    };
  };

  /**
   * The modules the processes run, besides the target, whose DWARF names one
   * of the saved files and of which no object file is here (their units'
   * sources are no object's): built straight from a source to a `.so`, no
   * watch can patch them, so they keep their old code. A module with objects
   * here is another watch's (--target), and the no-change event names its
   * objects. Each module's DWARF is read once (the first call, before ready).
   */
  function staleModules(saved: string[]): { module: string; pids: number[]; files: string[] }[] {
    const target = opts.target ? realOf(path.resolve(cwd, opts.target)) : exePath;
    const names = new Map(saved.flatMap((f) => [[f, f] as const, [realOf(f), f] as const]));
    const found = new Map<string, { module: string; pids: number[]; files: string[] }>();
    let objectSources: Set<string> | undefined;
    for (const p of pids) {
      let mods: ReturnType<typeof modules>;
      try {
        mods = modules(p);
      } catch {
        continue; // exited: the loop's top says so
      }
      for (const m of mods) {
        // The target; hotload's own patches and debug library (their DWARF names the sources too); data files.
        if (m.path === target || /\/hotload-\d+\//.test(m.path) || !m.mappings.some((x) => x.perms.includes('x'))) continue;
        const b = builtFrom(`/proc/${p}/root${m.path}`, `${m.path}:${m.inode}`);
        const files = [...new Set([...b.files].filter((f) => names.has(f)).map((f) => names.get(f)!))];
        if (files.length === 0) continue;
        objectSources ??= new Set([...objectFiles(objectsDir).values()].flatMap((o) => unitSources(o, cwd)));
        if (b.units.some((u) => objectSources!.has(u))) continue;
        const entry = found.get(m.path) ?? { module: m.path, pids: [], files: [] };
        entry.pids.push(p);
        entry.files = [...new Set([...entry.files, ...files.map((f) => path.relative(cwd, f) || f)])];
        found.set(m.path, entry);
      }
    }
    return [...found.values()];
  }

  // The objects' source names read before `ready`: else the first save pays for them.
  const compiler = opts.compile === false ? undefined : new DirectCompiler(cwd, objectsDir, build, spawner.run);
  let gone = false;
  let wasReady = false;
  let result: WatchSummary;
  try {
    compiler?.warm();
    await begin(opts.pids);
    wasReady = true;
    try {
      result = await loop();
    } finally {
      end(gone);
    }
  } catch (e) {
    if (wasReady) emit(stopped('failed', e)); // an error before ready is the only outcome; after, the stream still ends with `stopped`
    throw e;
  } finally {
    spawner.close();
  }
  emit(stopped(result.reason));
  return result;

  async function loop(): Promise<WatchSummary> {
    let seen = startStamps;
    // inotify (fs.watch) wakes the loop at once; the poll is the fallback for
    // file systems without it, and the truth (stamps decide what changed). With
    // inotify on every path the poll is only a safety net: once a second.
    let wake: (() => void) | undefined;
    // An event that arrives while the loop is busy (building, patching) is
    // kept: the loop then looks again at once instead of sleeping.
    let pending = false;
    const watchers: fs.FSWatcher[] = [];
    // A file is watched through its directory: editors often save by writing
    // a new file and renaming it over the old one, which a watch on the old
    // file's inode would miss.
    for (const p of paths) {
      try {
        const dir = fs.statSync(p).isDirectory();
        watchers.push(
          fs.watch(dir ? p : path.dirname(p), { recursive: dir, persistent: false }, () => {
            pending = true;
            wake?.();
          }),
        );
      } catch {
        /* polling only */
      }
    }
    const interval = opts.intervalMs ?? (watchers.length === paths.length ? 1000 : 100);
    // A save made while a build runs is built next: its file's stamp is not
    // taken for seen. A file that changes during a build made for other files
    // and again during the next one (made for it) is taken for the build's own
    // output (a generated source) and no longer triggers builds, until it
    // changes outside a build (an edit). A file saved while a build made for
    // it runs is an edit, however often: saves that come faster than builds
    // each get one.
    let changedInLastBuild = new Set<string>();
    const generated = new Set<string>();
    // Saved files not yet compiled into objects (a failed compile keeps them for the next).
    const dirty = new Set<string>();
    let relink: Promise<void> | undefined;
    let relinkWanted = false;
    const startRelink = () => {
      relinkWanted = false;
      const t = process.hrtime.bigint();
      // Not stopped by an abort: the program on disk would be left half linked (the last save's relink ends before watch does).
      relink = runShell(build, cwd, undefined, spawner.run).then((r) => {
        if (r.status !== 0 && !opts.signal?.aborted) emit({ event: 'relink-failed', status: r.status, output: r.output.trim(), buildMs: msSince(t) });
      });
    };
    const relinked = async () => {
      await relink;
      relink = undefined;
    };
    /** Relink now if a direct compile left the program behind, and wait. */
    const relinkNow = async () => {
      if (relinkWanted) startRelink();
      await relinked();
    };
    try {
      return await run();
    } finally {
      for (const w of watchers) w.close();
      await relinkNow();
    }

    async function run(): Promise<WatchSummary> {
      while (!opts.signal?.aborted) {
        if (relinkWanted) startRelink(); // the last save is handled
        if (!pending) await sleep(interval, opts.signal, (w) => (wake = w));
        wake = undefined;
        pending = false;
        if (opts.signal?.aborted) break;
        // A process that exited is dropped and said; watch goes on with the others, and stops (or, with `follow`, waits) when none is left.
        for (const p of pids.filter((x) => !fs.existsSync(`/proc/${x}`))) {
          pids = pids.filter((x) => x !== p);
          emit({ event: 'exited', pid: p, left: [...pids] });
        }
        if (pids.length === 0) {
          if (!opts.follow) {
            gone = true;
            return summary('exited');
          }
          // Wait for the program to be started again, then watch the new process
          // against the build it was started from (the objects on disk now).
          end(true);
          emit({ event: 'waiting', exe: exePath });
          const next = await waitForProgram(exePath, opts.signal);
          if (next.length === 0) {
            gone = true;
            return summary('aborted');
          }
          await sleep(100, opts.signal); // let it finish exec and its loader's work before its program file is read
          await begin(next);
          seen = startStamps;
          continue;
        }
        let now = stamps(paths);
        let changed = [...now.keys()].filter((f) => now.get(f) !== seen.get(f));
        if (changed.length === 0) continue;
        compiler?.prefetch(changed); // make's commands for their objects, asked while the save settles
        // Editors save in steps (write, rename), each within a few ms: go on
        // once the changed files have been still for 15 ms, counted from their
        // newest modification time (not from when this loop saw them: a save
        // seen half-written is not waited for twice), checking at most 20 times.
        for (let i = 0; i < 20; i++) {
          const newest = Math.max(...[...now].filter(([f, s]) => seen.get(f) !== s).map(([, s]) => Number(s.split(':')[0])));
          const still = Date.now() - newest;
          if (!(still >= 15)) await sleep(still >= 0 ? 15 - still : 15, opts.signal); // a time ahead of the clock: 15 ms
          const again = stamps(paths);
          if ([...again].every(([f, s]) => now.get(f) === s) && again.size === now.size) break;
          now = again;
        }
        // Files first written while the save settled (an editor's "save all")
        // are part of this save: taken for seen, they would never be compiled.
        const late = [...now.keys()].filter((f) => now.get(f) !== seen.get(f) && !changed.includes(f));
        if (late.length) {
          changed = [...changed, ...late];
          compiler?.prefetch(changed);
        }
        // A file made and removed again by a program (redis's Makefile writes
        // foo.c beside the sources for a compiler probe and removes it, on
        // every make run, dry runs too) is no save: one gone by now, or by
        // the time the save is compiled, is left out (a removal is not a save
        // either way; the build command would run for nothing, seconds long).
        changed = changed.filter((f) => now.has(f));
        seen = now;
        if (changed.length === 0) continue;
        for (const f of changed) generated.delete(f); // changed outside a build: an edit
        const t0 = process.hrtime.bigint();
        emit({ event: 'change', files: changed.map((f) => path.relative(cwd, f) || f) });
        const stale = staleModules(changed);
        if (stale.length) emit({ event: 'stale-modules', modules: stale });

        // The saved sources compiled directly when every one maps to objects
        // with a known command (with those a failed compile left behind);
        // else the build command.
        for (const f of changed) dirty.add(f);
        await relinked(); // the last save's relink ends before this save's objects are written
        await compiler?.ready();
        for (const f of [...dirty]) if (!fs.existsSync(f)) dirty.delete(f);
        if (dirty.size === 0) {
          emit({ event: 'no-change', buildMs: msSince(t0) });
          continue;
        }
        const builtFor = new Set(dirty);
        const tc = process.hrtime.bigint();
        const compile = async () => {
          const steps = compiler?.plan([...dirty]);
          const compiled = Array.isArray(steps) && steps.length ? steps.map((x) => path.relative(objectsDir, x.object)).sort() : undefined;
          // The build command remakes what it finds older than its sources:
          // an object an earlier build wrote after these files were saved,
          // from their text before, must not pass for current.
          if (!compiled) {
            try {
              outdateObjects(objectsDir, [...dirty]);
            } catch {
              /* no objects to date: the build makes them */
            }
          }
          const b = compiled ? await runSteps(steps as CompileStep[], opts.signal, spawner.run) : await runShell(build, cwd, opts.signal, spawner.run);
          return { compiled, b };
        };
        let { compiled, b } = await compile();
        // A command make gave at an earlier save, taken while it was asked
        // again, that it now gives otherwise (its makefiles changed): planned
        // and compiled again with its answer.
        if (compiled && !(await compiler!.confirmed())) ({ compiled, b } = await compile());
        const via = compiled ? { compiled } : {};
        const compilerMs = msSince(tc);
        if (b.status === 0) dirty.clear();
        // Compiled directly, the program on disk is not relinked yet: the build
        // command does that once this save is handled, off the critical path
        // (before a refusal, which says to restart, it runs and is waited for;
        // the next save and the end wait for it).
        relinkWanted = !!compiled && b.status === 0;
        const buildMs = msSince(t0);
        if (opts.signal?.aborted) break;
        const after = stamps(paths);
        const during = [...after.keys()].filter((f) => after.get(f) !== seen.get(f));
        for (const f of during) {
          if (!changedInLastBuild.has(f) && !generated.has(f)) continue;
          generated.add(f);
          seen.set(f, after.get(f)!);
        }
        const again = during.filter((f) => !generated.has(f));
        changedInLastBuild = new Set(again.filter((f) => !builtFor.has(f)));
        if (again.length) pending = true; // saved while the build ran: build again at once
        if (b.status !== 0) {
          emit({ event: 'build-failed', status: b.status, output: b.output.trim(), buildMs, ...via });
          continue;
        }
        // What changed since the last patch (or the running build). Nothing: a
        // save that changed no code (a comment, a touch) applies nothing.
        // (A diff that cannot be made, a build without types, is left to mkpatch to refuse.)
        const t1 = process.hrtime.bigint(); // patchMs: what changed since the last patch, and the patch
        let d: ReturnType<typeof diffObjectSets>['merged'] | undefined;
        let changedObjects: string[] | undefined;
        // The objects as the diff reads them: `last` takes only those (what the process then runs).
        let read: Map<string, string>;
        try {
          read = objectStamps(objectsDir);
        } catch {
          read = new Map(); // the diff below says why; nothing is taken
        }
        try {
          // Types are compared by mkpatch; here only when no code changed (a layout edit alone is still refused).
          // Before the first patch that is the running build itself: its copy
          // `orig`, whose objects mkpatch reads below (each file is parsed once).
          const base = objectFiles(patches.length ? last : orig);
          let set = diffObjectSets(base, objectFiles(objectsDir), { layouts: false });
          if (changesNothing(set.merged)) set = diffObjectSets(base, objectFiles(objectsDir));
          d = set.merged;
          changedObjects = set.units.map((u) => u.rel);
        } catch {
          d = undefined;
        }
        if (d && patches.length > 0 && !d.refused.length && changesNothing(d)) {
          syncObjects(objectsDir, last, lastStamps, read);
          emit({ event: 'no-change', buildMs, ...via });
          continue;
        }
        let out = path.join(snap, `patch-${patches.length + 1}.so`);
        let made: Awaited<ReturnType<typeof mkpatchFromBuilds>>;
        try {
          made = await mkpatchFromBuilds({ from: orig, to: objectsDir, target: targetCopy, out, also: Object.fromEntries(replaced), redirected, run: spawner.run });
          // Every object changed since the last patch belongs to another module
          // of the tree: this target has nothing new (the patch would only
          // repeat the last one). Said, not passed over.
          const mine = changedObjects?.filter((o) => !made.otherModules.includes(o));
          if (patches.length > 0 && changedObjects?.length && mine?.length === 0) {
            fs.rmSync(out, { force: true });
            syncObjects(objectsDir, last, lastStamps, read);
            emit({ event: 'no-change', buildMs, ...via, otherModules: changedObjects });
            continue;
          }
          // Named for what it is, as profilers and `status` show it: program, functions, save.
          const named = path.join(snap, patchName(path.basename(targetCopy), d ? d.changed.flatMap(functionOfPart) : made.replaced, patches.length + 1));
          fs.renameSync(out, named);
          out = named;
        } catch (e) {
          if (isHotloadError(e) && e.code === 'NO_CHANGE') {
            const others = e.details;
            if (others.length) syncObjects(objectsDir, last, lastStamps, read);
            emit({ event: 'no-change', buildMs, ...via, ...(others.length ? { otherModules: others } : {}) });
          }
          else {
            await relinkNow();
            emit({ event: 'refused', error: errorDoc(e), buildMs, ...via });
          }
          continue;
        }
        const patchMs = msSince(t1);
        // The report names what changed since the last patch (the patch has them all).
        // A changed part (f.cold) is reported as its function.
        const since = d ? [...d.changed.flatMap(functionOfPart), ...d.added.filter((a) => made.added.includes(a))] : [...made.replaced, ...made.added];
        const t2 = process.hrtime.bigint();
        const done: number[] = [];
        const failed: { pid: number; error: ErrorDoc }[] = [];
        let stoppedMs = 0;
        const active: { pid: number; function: string; thread: number; depth: number }[] = [];
        for (const p of pids) {
          try {
            const a = attach(p, out);
            stoppedMs = Math.max(stoppedMs, a.timings.stoppedMs);
            for (const x of a.active) active.push({ pid: p, ...x });
            done.push(p);
          } catch (e) {
            if (isHotloadError(e) && e.code === 'PID_NOT_FOUND') {
              pids = pids.filter((x) => x !== p);
              emit({ event: 'exited', pid: p, left: [...pids] });
            } else failed.push({ pid: p, error: errorDoc(e) });
          }
        }
        if (pids.length === 0) continue; // exited meanwhile: the loop's top reports it (and follows, with `follow`)
        if (done.length === 0) {
          // The same error everywhere (the usual case: one process): nothing changed anywhere.
          await relinkNow();
          emit({ event: 'refused', error: failed[0].error, buildMs, ...via });
          continue;
        }
        const applyMs = msSince(t2);
        for (const f of made.replaced) replaced.set(f, made.replacedIn[f]);
        patches.push(out);
        for (const p of done) {
          const a = applied.get(p) ?? { patches: [], replaced: new Set<string>() };
          a.patches.push(out);
          for (const f of made.replaced) a.replaced.add(f);
          applied.set(p, a);
        }
        syncObjects(objectsDir, last, lastStamps, read);
        emit({
          event: 'patched',
          changed: [...new Set(since)].filter((f) => made.replaced.includes(f) || made.added.includes(f)).sort(),
          added: made.added,
          replaced: made.replaced,
          patch: out,
          pids: done,
          failed,
          buildMs,
          ...via,
          compilerMs,
          patchMs,
          applyMs,
          totalMs: msSince(t0),
          stoppedMs,
          active,
          demangled: Object.fromEntries(demangle([...made.replaced, ...made.added])),
        });
        if (opts.maxPatches && patches.length >= opts.maxPatches) return summary('max-patches');
      }
      return summary('aborted');
    }
  }
}

function errorDoc(e: unknown): ErrorDoc {
  if (isHotloadError(e)) return e.toJSON();
  return { code: 'INTERNAL', message: (e as Error)?.message ?? String(e), hint: 'This is a hotload bug; please report it.', details: [] };
}

/**
 * `server-handle_request+2-3.so`: the program, the first changed function
 * (C++: `Square.area`, see shortName) and how many more, the save's number;
 * at most 120 characters, the function's part cut at its end, so the program
 * and the number always show.
 */
export function patchName(program: string, changed: string[], n: number): string {
  const safe = (x: string) => x.replace(/[^A-Za-z0-9._+-]/g, '_');
  const names = demangle(changed.map((k) => k.split('@')[0]));
  const fns = [...new Set(changed.map((k) => shortName(names.get(k.split('@')[0]) ?? k.split('@')[0])))].sort();
  const more = fns.length > 1 ? `+${fns.length - 1}` : '';
  const head = safe(program).slice(0, 60);
  const tail = `${more}-${n}.so`;
  const fn = fns.length ? `-${safe(fns[0])}`.slice(0, 120 - head.length - tail.length) : '';
  return `${head}${fn}${tail}`;
}

/** Operators by a word a file name can hold. */
const OPERATORS: Record<string, string> = {
  '()': 'call', '[]': 'index', '==': 'eq', '!=': 'ne', '<=>': 'cmp', '<=': 'le', '>=': 'ge', '<<=': 'shl_assign', '>>=': 'shr_assign', '<<': 'shl', '>>': 'shr',
  '<': 'lt', '>': 'gt', '->*': 'arrow_star', '->': 'arrow', '&&': 'and', '||': 'or', '++': 'inc', '--': 'dec', '+=': 'plus_assign', '-=': 'minus_assign',
  '*=': 'mul_assign', '/=': 'div_assign', '%=': 'mod_assign', '&=': 'and_assign', '|=': 'or_assign', '^=': 'xor_assign', '+': 'plus', '-': 'minus', '*': 'mul',
  '/': 'div', '%': 'mod', '&': 'bitand', '|': 'bitor', '^': 'xor', '~': 'compl', '!': 'not', '=': 'assign', ',': 'comma', 'new[]': 'new_array',
  'delete[]': 'delete_array', new: 'new', delete: 'delete',
};

/**
 * A function's name made short for a file name: a C++ name (demangled) loses
 * its parameters, template arguments, ABI tags and return type and keeps its
 * last two scopes (`ns::Square::area(int) const` is `Square.area`, a lambda
 * in `run()` is `run.lambda`, `operator==` is `operator_eq`); a C name is
 * itself.
 */
export function shortName(cxx: string): string {
  let s = cxx.replace(/\[abi:[^\]]*\]/g, '');
  s = s.replace(/operator\s*(new\[\]|delete\[\]|new|delete|\(\)|\[\]|<=>|<<=|>>=|->\*|<<|>>|<=|>=|==|!=|->|&&|\|\||\+\+|--|[-+*/%&|^]=|[-+*/%&|^~!=<>,])/g, (_m, op: string) => `operator_${OPERATORS[op]}`);
  s = s.replace(/operator\s+(?=[A-Za-z_])/g, 'operator_'); // a conversion: operator_bool
  // What is inside brackets goes; a `{lambda(...)#1}` or `{unnamed type#1}` scope keeps its word.
  let top = '';
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '{' && depth === 0) top += /^\{lambda/.test(s.slice(i)) ? 'lambda' : 'unnamed';
    if ('<([{'.includes(c)) depth++;
    else if ('>)]}'.includes(c)) depth = Math.max(0, depth - 1);
    else if (depth === 0) top += c;
  }
  // The name is the last word that is not a qualifier (a return type comes before it).
  const words = top.split(/\s+/).filter((w) => w && !['const', 'volatile', '&', '&&', 'noexcept'].includes(w));
  const name = words[words.length - 1] ?? cxx;
  const scopes = name.split('::').filter(Boolean);
  if (scopes.length > 2 && scopes[scopes.length - 2] === 'lambda' && scopes[scopes.length - 1] === 'operator_call') scopes.pop(); // a lambda's body: named after where it is
  return scopes.slice(-2).join('.') || cxx;
}
