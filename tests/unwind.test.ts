// Unwinding the stacks of real, stopped threads with their modules' .eh_frame
// (packages/injector/src/unwind.ts): down to the outermost frame, through the
// functions the thread is really inside, and through signal frames.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { ElfFile } from '@hotload/elf';
import { Session, modules } from '@hotload/injector';
import { findRuntime } from '../packages/injector/src/call-in-target';
import { unwind } from '../packages/injector/src/unwind';
import { FIX, Target } from './helpers';

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
    return s.survey().map((r) => unwind(rt.unwind!, rt.restoreRt, r, (at) => s.read(at, 8).readBigUInt64LE(0))?.map((f) => name(f.exact ? f.pc : f.pc - 1n)));
  } finally {
    s.close();
  }
}

test('a main thread asleep in nanosleep and a second thread: every stack unwinds to its outermost frame', async () => {
  const t = Target.start(TARGET, ['block', 'nanosleep']);
  try {
    await t.waitFor(/^blocking/);
    const all = stacks(t.pid);
    expect(all.length).toBeGreaterThanOrEqual(1);
    for (const st of all) {
      expect(st).toBeDefined();
      expect(st![st!.length - 1]).toMatch(/^(_start|clone3?|\?libc\.so\.6)$/); // the outermost frame
    }
    const sleeper = all.find((st) => st!.some((f) => /nanosleep/.test(f)))!;
    expect(sleeper).toBeDefined();
    expect(sleeper.slice(sleeper.findIndex((f) => /nanosleep/.test(f)))).toContain('main'); // the program's code, below libc's
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
  try {
    await t.waitFor(/^sigmalloc handlers [1-9]/);
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
    await t.stop();
    spawnSync('pkill', ['-9', '-f', `${TARGET} sigmalloc`]); // its forked lock holder
  }
});
