// watch's fast path: compile what a save changed, each object with its own
// command line, in parallel, and skip the build system and the link (hotload
// diffs objects; it never needs the linked program).
//
// 1. Which objects: a saved source is the main file of the objects whose
//    DWARF unit names it (DW_AT_name, relative to the object's directory,
//    DW_AT_comp_dir or the watch directory); a saved header, of the objects
//    whose dependency file lists it (-MD: `x.d`, automake's `.deps/x.Po`,
//    CMake's `x.o.d`).
// 2. Which command: the object's entry in compile_commands.json (CMake's
//    CMAKE_EXPORT_COMPILE_COMMANDS, Meson, bear), else make's own, asked with
//    `make -n -W <source> <object>` (what make would run were the source new;
//    accepted only when it is one compile and bookkeeping: mv, rm, echo,
//    mkdir, `test ... ||` guards).
// 3. Anything else (a file no object is known to use, a new source, a build
//    that is not make and has no compile_commands.json) is not guessed: the
//    plan says why, and watch runs the build command as before.
//
// The objects are written where the build writes them, so the next build
// command (or the user's own make) sees them up to date and only relinks.

import * as cp from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ElfFile, readUnits } from '@hotload/elf';
import { Runner, objectFiles, runProgram } from '@hotload/patch';

export interface CompileStep {
  /** The object file (absolute). */
  object: string;
  /** Its main source (absolute). */
  source: string;
  cwd: string;
  /** A shell command (make's may be several lines). */
  command: string;
}

interface DbEntry {
  cwd: string;
  command: string;
  object: string;
}

const real = (p: string) => {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
};

/** The arguments as one shell command (compile_commands.json's `arguments` form). */
function shellJoin(args: string[]): string {
  return args.map((a) => (/^[A-Za-z0-9_./=:,+@%-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}

/** The `-o` argument of a compiler command line. */
function outputOf(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-o') return args[i + 1];
    if (args[i].startsWith('-o') && args[i].length > 2) return args[i].slice(2);
  }
  return undefined;
}

/**
 * make's dry-run output when it is one compile plus bookkeeping (moving
 * depfiles, automake's guards such as `test -f config.h || ...`, no-ops while
 * config.h is there); else undefined.
 */
function onlyCompile(stdout: string): string | undefined {
  if (!stdout) return undefined;
  const lines = stdout.trim().split('\n').filter((l) => l.trim());
  const compiles = lines.filter((l) => /\s-c(\s|$)/.test(l));
  const bookkeeping = (l: string) => /^\s*(mv|rm|echo|:|true|mkdir|test)\s/.test(l) || /^\s*(true|:)\s*$/.test(l);
  if (compiles.length !== 1 || !lines.every((l) => compiles.includes(l) || bookkeeping(l))) return undefined;
  return lines.join('\n');
}

/** The prerequisites a make dependency file lists (every target's, merged). */
export function depfilePrereqs(text: string, base: string): string[] {
  const out: string[] = [];
  for (const rule of text.replace(/\\\n/g, ' ').split('\n')) {
    const colon = rule.search(/:(\s|$)/);
    if (colon < 0) continue;
    for (const p of rule.slice(colon + 1).trim().split(/\s+/)) if (p) out.push(path.resolve(base, p.replace(/\\ /g, ' ')));
  }
  return out;
}

export class DirectCompiler {
  private db?: { file: string; mtimeMs: number; bySource: Map<string, DbEntry[]> };
  private sourcesOf = new Map<string, string[]>();
  /** Is the build command make: only then is make's dry run asked. */
  private readonly isMake: boolean;

  constructor(
    private readonly cwd: string,
    private readonly objectsDir: string,
    build: string,
    /** Starts make's dry runs (watch's helper process: spawner.ts). */
    private readonly run: Runner = runProgram,
  ) {
    this.isMake = /^\s*(g|gnu)?make(\s|$)/.test(build);
  }

  /** compile_commands.json of the watch or objects directory, by source (re-read when it changes). */
  private database(): Map<string, DbEntry[]> | undefined {
    const file = [this.cwd, this.objectsDir].map((d) => path.join(d, 'compile_commands.json')).find((f) => fs.existsSync(f));
    if (!file) return undefined;
    const mtimeMs = fs.statSync(file).mtimeMs;
    if (this.db?.file === file && this.db.mtimeMs === mtimeMs) return this.db.bySource;
    const bySource = new Map<string, DbEntry[]>();
    let entries: { directory: string; file: string; command?: string; arguments?: string[]; output?: string }[];
    try {
      entries = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch {
      return undefined;
    }
    for (const e of Array.isArray(entries) ? entries : []) {
      if (!e || typeof e.directory !== 'string' || typeof e.file !== 'string') continue;
      const args = e.arguments ?? (typeof e.command === 'string' ? e.command.trim().split(/\s+/) : undefined);
      if (!args) continue;
      const out = e.output ?? outputOf(args);
      if (!out) continue;
      const entry = { cwd: e.directory, command: e.arguments ? shellJoin(e.arguments) : e.command!, object: real(path.resolve(e.directory, out)) };
      const src = real(path.resolve(e.directory, e.file));
      bySource.set(src, [...(bySource.get(src) ?? []), entry]);
    }
    this.db = { file, mtimeMs, bySource };
    return bySource;
  }

  /** The main source of an object, from its DWARF (candidates that exist, first the object's own directory). */
  private sourceOf(object: string): string[] {
    let s = this.sourcesOf.get(object);
    if (s) return s;
    s = unitSources(object, this.cwd);
    this.sourcesOf.set(object, s);
    return s;
  }

  /** Dependency files the compiler may have written for an object. */
  private depfiles(object: string): string[] {
    const dir = path.dirname(object);
    const stem = path.basename(object).replace(/\.o$/, '');
    return [`${object}.d`, path.join(dir, `${stem}.d`), path.join(dir, '.deps', `${stem}.Po`), path.join(dir, '.deps', `${stem}.d`)].filter((f) => fs.existsSync(f));
  }

  /** make's dry run for an object: its arguments and environment. */
  private makeRun(object: string, source: string) {
    // Not a sub-make of whatever runs hotload: an inherited MAKEFLAGS/MAKELEVEL adds directory lines and job-server options.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !['MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES'].includes(k)));
    return { args: ['--no-print-directory', '-n', '-W', path.relative(this.cwd, source), path.relative(this.cwd, object)], cwd: this.cwd, env, timeoutMs: 10000 };
  }

  /**
   * make's own command for an object, or undefined: asked while the save
   * settled (prefetch), else now. While that question is still out, the
   * answer make gave at an earlier save is taken (a guess: confirmed() says
   * whether make answered the same).
   */
  private makeCommand(object: string, source: string): string | undefined {
    if (!this.isMake) return undefined;
    const key = `${object}\0${source}`;
    if (this.answers.has(key)) return this.answers.get(key);
    const earlier = this.known.get(key);
    if (earlier !== undefined && this.asked.has(key)) {
      this.guessed.set(key, earlier);
      return earlier;
    }
    const { args, cwd, env, timeoutMs } = this.makeRun(object, source);
    const r = cp.spawnSync('make', args, { cwd, env, timeout: timeoutMs, encoding: 'utf8' });
    return r.status === 0 ? onlyCompile(r.stdout) : undefined;
  }

  /** Answers of make's dry runs asked by prefetch, for this save only. */
  private answers = new Map<string, string | undefined>();
  /** The dry runs asked for this save, by object and source. */
  private asked = new Map<string, Promise<void>>();
  /** Every command make answered, by object and source, the latest answer kept. */
  private known = new Map<string, string>();
  /** The commands plan() took from `known` for this save, before make answered. */
  private guessed = new Map<string, string>();

  /**
   * Ask make for the commands of the objects these saved sources are the main
   * source of, without waiting: the save settles meanwhile, and plan() takes
   * the answers (once ready() has resolved). The answers hold for this
   * save only; anything not asked is asked by plan() itself.
   */
  prefetch(changed: string[]): void {
    this.answers.clear();
    this.asked.clear();
    this.guessed.clear();
    if (!this.isMake || this.database()) return;
    const objects = [...objectFiles(this.objectsDir).values()].map(real);
    for (const f of changed.map(real)) {
      for (const object of objects.filter((o) => this.sourceOf(o).includes(f))) {
        const key = `${object}\0${f}`;
        const { args, ...opts } = this.makeRun(object, f);
        this.asked.set(
          key,
          this.run('make', args, opts).then((r) => {
            const command = r.status === 0 ? onlyCompile(r.stdout) : undefined;
            this.answers.set(key, command);
            if (command === undefined) this.known.delete(key);
            else this.known.set(key, command);
          }),
        );
      }
    }
  }

  /**
   * plan() can be made: make has answered, or gave a command for the same
   * object at an earlier save (make's dry run takes about as long as the save
   * takes to settle on a large automake tree; its command is nearly always
   * the one it gave last time, and confirmed() says when it is not).
   */
  async ready(): Promise<void> {
    await Promise.all([...this.asked].filter(([key]) => !this.known.has(key)).map(([, p]) => p));
  }

  /** make answered every command plan() guessed with the same command (false: its makefiles changed; plan again and compile again). */
  async confirmed(): Promise<boolean> {
    await Promise.all(this.asked.values());
    return [...this.guessed].every(([key, command]) => this.answers.get(key) === command);
  }

  /**
   * Read every object's source names now (its DWARF), while nothing waits:
   * else the first save pays for it (half a second on Lua).
   */
  warm(): void {
    if (this.database()) return;
    for (const o of objectFiles(this.objectsDir).values()) this.sourceOf(real(o));
  }

  /**
   * The steps that make the objects these saved files change, or why they
   * cannot be made without the build command.
   */
  plan(changed: string[]): CompileStep[] | string {
    const db = this.database();
    const objects = [...objectFiles(this.objectsDir).values()].map(real);
    const wanted = new Map<string, string>(); // object -> its main source
    for (const f of changed.map(real)) {
      if (!fs.existsSync(f)) return `${path.relative(this.cwd, f)} was removed`;
      const fromDb = db?.get(f)?.map((e) => e.object).filter((o) => objects.includes(o));
      const main = fromDb?.length ? fromDb : objects.filter((o) => this.sourceOf(o).includes(f));
      if (main.length) {
        for (const o of main) wanted.set(o, f);
        continue;
      }
      const users = objects.filter((o) => this.depfiles(o).some((d) => depfilePrereqs(fs.readFileSync(d, 'utf8'), db?.get(this.sourceOf(o)[0])?.[0]?.cwd ?? this.cwd).map(real).includes(f)));
      if (users.length === 0) return `no object is known to use ${path.relative(this.cwd, f)} (no DWARF unit names it, no dependency file lists it)`;
      for (const o of users) {
        const src = this.sourceOf(o)[0];
        if (!src) return `the source of ${path.relative(this.cwd, o)} is not known`;
        wanted.set(o, src);
      }
    }
    const steps: CompileStep[] = [];
    for (const [object, source] of wanted) {
      const e = db?.get(source)?.find((x) => x.object === object);
      if (e) {
        steps.push({ object, source, cwd: e.cwd, command: e.command });
        continue;
      }
      const command = this.makeCommand(object, source);
      if (!command) return `no command line for ${path.relative(this.cwd, object)} (no compile_commands.json entry${this.isMake ? ', and make would run more than its compile' : ', and the build is not make'})`;
      steps.push({ object, source, cwd: this.cwd, command });
    }
    return steps;
  }
}

/**
 * Before the build command runs for saved files: every object written at or
 * after the oldest saved file's modification time is dated to just before
 * it, so that the build recompiles those of them that depend on a saved file.
 * make (like ninja) takes an object newer than its sources for current; but
 * a compile that read a source before a save and wrote its object after it
 * (a save arriving while the previous save's build or relink compiled that
 * file) leaves an object of the old text that is newer than the new text, and
 * the build would keep it. An object the build does not need to remake stays
 * as it is (only its time moved back, still after its own sources). Returns
 * the objects dated back (relative to `objectsDir`).
 */
export function outdateObjects(objectsDir: string, saved: string[]): string[] {
  const times = saved.flatMap((f) => {
    try {
      return [fs.statSync(f, { bigint: true }).mtimeNs];
    } catch {
      return []; // removed: the build says what that means
    }
  });
  if (times.length === 0) return [];
  const since = times.reduce((a, b) => (a < b ? a : b));
  // A millisecond before: file times tick coarsely, and make compares them to the nanosecond where it can.
  const before = Number(since / 1000n - 1000n) / 1e6; // seconds, as utimes takes them
  const out: string[] = [];
  for (const [rel, file] of objectFiles(objectsDir)) {
    try {
      const st = fs.statSync(file, { bigint: true });
      if (st.mtimeNs < since) continue;
      fs.utimesSync(file, Number(st.atimeNs / 1000n) / 1e6, before);
      out.push(rel);
    } catch {
      /* gone meanwhile: the build makes it */
    }
  }
  return out.sort();
}

/** Run the steps, as many at a time as there are CPUs; the first failure's status and everyone's output. */
export async function runSteps(steps: CompileStep[], signal?: AbortSignal, run: Runner = runProgram): Promise<{ status: number | null; output: string }> {
  const width = Math.max(1, os.cpus().length);
  let next = 0;
  let status: number | null = 0;
  const outputs: string[] = new Array(steps.length).fill('');
  const lane = async () => {
    while (next < steps.length) {
      const i = next++;
      const r = await runShell(steps[i].command, steps[i].cwd, signal, run);
      outputs[i] = r.output;
      if (r.status !== 0 && status === 0) status = r.status;
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, steps.length) }, lane));
  return { status, output: outputs.join('') };
}

/** A shell command in `cwd`: its exit status (null: it could not start) and its output, stdout and stderr as they came. */
export async function runShell(cmd: string, cwd: string, signal?: AbortSignal, run: Runner = runProgram): Promise<{ status: number | null; output: string }> {
  const r = await run('sh', ['-c', cmd], { cwd, signal });
  return { status: r.status, output: r.error && !r.output ? r.error : r.output };
}

/**
 * The main source files of a built file (an object, or a linked module): its
 * DWARF units' names, as real paths of files that exist, each found relative
 * to the file's directory, the unit's DW_AT_comp_dir or `cwd`.
 */
export function unitSources(file: string, cwd: string): string[] {
  const out: string[] = [];
  try {
    for (const u of readUnits(ElfFile.open(file), true)) { // only the units' names: no function bodies
      if (!u.name) continue;
      const candidates = path.isAbsolute(u.name) ? [u.name] : [path.dirname(file), u.compDir, cwd].filter(Boolean).map((d) => path.resolve(d, u.name));
      const found = candidates.find((c) => fs.existsSync(c));
      if (found) out.push(real(found));
    }
  } catch {
    /* no DWARF we can read: no known source */
  }
  return out;
}

