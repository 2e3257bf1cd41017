// Unwinding the stacks of real, stopped threads with their modules' .eh_frame
// (packages/injector/src/unwind.ts): down to the outermost frame, through the
// functions the thread is really inside, and through signal frames.
import * as path from 'path';
import { ElfFile } from '@hotload/elf';
import { Session, modules } from '@hotload/injector';
import { findRuntime } from '../packages/injector/src/call-in-target';
import { unwind } from '../packages/injector/src/unwind';
import { FIX, Target, exited } from './helpers';

const TARGET = path.join(FIX, 'target');

/** Names of the functions of `file` (mapped at `bias`) that contain each address; '?' elsewhere. */
function namer(pid: number) {
  const mods = modules(pid);
  const syms = mods.map((m) => {
    const elf = ElfFile.open(m.path);
    const first = m.mappings.find((x) => x.offset === 0n) ?? m.mappings[0];
    const bias = first.start - BigInt(elf.loadBase);
    const list = [...elf.symbols('.symtab'), ...elf.symbols('.dynsym')].filter((s) => s.type === 2 && s.size > 0);
    return { m, bias, list };
  });
  return (pc: bigint) => {
    for (const { m, bias, list } of syms) {
      if (!m.mappings.some((x) => pc >= x.start && pc < x.end)) continue;
      const at = Number(pc - bias);
      const s = list.find((x) => at >= x.value && at < x.value + x.size);
      return s ? s.name : `?${path.basename(m.path)}`;
    }
    return '?';
  };
}

/** Stop every thread of `pid`, unwind each, resume; the functions per thread, innermost first. */
function stacks(pid: number): (string[] | undefined)[] {
  const name = namer(pid);
  const s = Session.open(pid);
  try {
    s.stopAll();
    const rt = findRuntime(pid, modules(pid));
    return s.survey().map((r) => unwind(rt.unwind, r, (at) => s.read(at, 8).readBigUInt64LE(0))?.map((f) => name(f.exact ? f.pc : f.pc - 1n)));
  } finally {
    s.close();
  }
}

test('a main thread asleep in nanosleep and a second thread: every stack unwinds to its outermost frame', async () => {
  const t = Target.start(TARGET, ['block', 'nanosleep']);
  try {
    await t.waitFor(/^blocking/);
    const all = stacks(t.pid);
    expect(all).toHaveLength(2); // both threads: main, and the waker it started
    for (const st of all) {
      expect(st).toBeDefined();
      expect(st![st!.length - 1]).toMatch(/^(_start|clone3?|\?libc\.so\.6)$/); // the outermost frame
    }
    // The main thread, asleep in nanosleep, down through main to _start.
    const sleeper = all.filter((st) => st!.includes('main'));
    expect(sleeper).toHaveLength(1);
    expect(sleeper[0]![0]).toMatch(/nanosleep/);
    expect(sleeper[0]!.slice(sleeper[0]!.findIndex((f) => /nanosleep/.test(f)))).toContain('main'); // the program's code, below libc's
    expect(sleeper[0]![sleeper[0]!.length - 1]).toBe('_start');
    // The waker, asleep in usleep, down through its start routine into libc's thread start.
    const waker = all.filter((st) => st!.includes('waker'));
    expect(waker).toHaveLength(1);
    expect(waker[0]!.indexOf('waker')).toBeGreaterThan(waker[0]!.indexOf('usleep'));
    expect(waker[0]!.indexOf('usleep')).toBeGreaterThan(0);
    expect(waker[0]![waker[0]!.length - 1]).toMatch(/^(clone3?|\?libc\.so\.6)$/);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

test('a thread asleep inside a dl_iterate_phdr callback: the callback and dl_iterate_phdr are on its stack', async () => {
  const t = Target.start(TARGET, ['phdrcb']);
  try {
    await t.waitFor(/^in callback/);
    const [st] = stacks(t.pid);
    expect(st).toBeDefined();
    const i = st!.indexOf('sleep_in_callback');
    expect(i).toBeGreaterThanOrEqual(0);
    expect(st!.indexOf('dl_iterate_phdr')).toBeGreaterThan(i);
    expect(st!.indexOf('main')).toBeGreaterThan(st!.indexOf('dl_iterate_phdr'));
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

test('a thread inside a signal handler: the unwinding goes through the signal frame into the code it interrupted', async () => {
  const t = Target.start(TARGET, ['sigmalloc']);
  let holder: number[] = [];
  try {
    await t.waitFor(/^sigmalloc handlers [1-9]/);
    holder = t.descendants(); // the child it forked to hold the lock
    expect(holder).toHaveLength(1);
    // The SIGALRM handler spins 80 ms of every 100: most looks find the main thread in it.
    let seen: string[] | undefined;
    for (let i = 0; i < 20 && !seen; i++) {
      const st = stacks(t.pid).find((x) => x?.includes('spin_handler'));
      if (st) seen = st;
    }
    expect(seen).toBeDefined();
    const h = seen!.indexOf('spin_handler');
    expect(seen![h + 1]).toMatch(/restore_rt|\?libc/); // the handler returns into __restore_rt
    expect(seen!.slice(h + 2)).toContain('main'); // and below the signal frame, the interrupted main loop
    expect(seen![seen!.length - 1]).toBe('_start');
  } finally {
    await t.stop(); // and its forked lock holder, by its pid
  }
  expect(holder.filter((p) => !exited(p))).toEqual([]);
});
