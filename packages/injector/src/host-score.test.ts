// Which stopped thread may host dlopen: the one rule of judgeHost on made-up
// registers and unwound stacks, and the lock-holding code it is checked
// against, read from the real C library. The real processes behind each rule
// are in tests/attach.test.ts (signals, blocked threads), tests/waits.test.ts,
// tests/attach-errors.test.ts and tests/attach-stress.test.ts.
import { ElfFile } from '@hotload/elf';
import { judgeHost, libcLockRanges } from './call-in-target';
import type { ThreadRegs } from './native';
import type { Frame, Walk } from './unwind';

const MALLOC: [bigint, bigint] = [0x7f0000010000n, 0x7f0000011000n];
const LOADER: [bigint, bigint] = [0x7f0000200000n, 0x7f0000230000n];
const rt = { lockRanges: [MALLOC, LOADER] };
const PROGRAM = 0x555555555100n;
const LIBC_READ = 0x7f0000030000n; // libc code that takes no lock (a read wrapper)

const regs = (r: Partial<ThreadRegs>): ThreadRegs => ({ tid: 1, rip: PROGRAM, rax: 0n, origRax: -1n, rsp: 0x7ffc00000000n, rbp: 0n, ...r });
const frames = (...pcs: bigint[]): Frame[] => pcs.map((pc, i) => ({ pc, exact: i === 0 }));
const whole = (...pcs: bigint[]): Walk => ({ frames: frames(...pcs) });
const judge = (r: Partial<ThreadRegs>, w: Walk) => judgeHost(rt, regs(r), w);

test('a thread running program code whose stack holds no lock-holding frame is a host; one waiting in a system call is the better host', () => {
  expect(judge({}, whole(PROGRAM, PROGRAM + 0x40n))).toEqual({ score: 1 });
  expect(judge({ rip: LIBC_READ + 2n, origRax: 0n, rax: -512n }, whole(LIBC_READ + 2n, PROGRAM))).toEqual({ score: 2 });
  // Running libc code that holds no lock (a memcpy, a read wrapper) is no reason to refuse.
  expect(judge({ rip: LIBC_READ }, whole(LIBC_READ, PROGRAM))).toEqual({ score: 1 });
});

test('a frame of the allocator or the loader anywhere on the stack refuses it: running there, waiting in futex under it, or in a handler over it', () => {
  const why = 'inside malloc, dlopen, dl_iterate_phdr or the loader (its stack unwound)';
  expect(judge({ rip: MALLOC[0] + 4n }, whole(MALLOC[0] + 4n, PROGRAM))).toEqual({ score: 0, why });
  // futex wait inside dlopen: the loader's frame below libc's lock wait.
  expect(judge({ origRax: 202n, rax: -512n }, whole(LIBC_READ + 2n, LOADER[0] + 0x100n, PROGRAM))).toEqual({ score: 0, why });
  // A signal handler (program code) over malloc: the interrupted frame is exact.
  const overMalloc: Walk = { frames: [{ pc: PROGRAM, exact: true }, { pc: 0x7f0000040001n, exact: false }, { pc: MALLOC[0] + 0x10n, exact: true }, { pc: PROGRAM + 8n, exact: false }] };
  expect(judge({}, overMalloc)).toEqual({ score: 0, why });
});

test('a return address just past a lock-holding function is judged by the call before it (pc - 1), not the byte after', () => {
  const why = 'inside malloc, dlopen, dl_iterate_phdr or the loader (its stack unwound)';
  expect(judge({}, whole(PROGRAM, MALLOC[1]))).toEqual({ score: 0, why }); // returns to MALLOC[1]: the call was the last instruction inside
  expect(judge({}, whole(PROGRAM, MALLOC[0]))).toEqual({ score: 1 }); // returns to its first byte: the call was before it
});

test('a stack that cannot be unwound is refused for now, unless a lock-holding frame was found before the walk stopped', () => {
  const fail = { why: 'no call frame information covers it', pc: 0x7f0000500000n, where: '/usr/lib/libfoo.so+0x1234' };
  expect(judge({}, { frames: frames(PROGRAM, 0x7f0000500001n), fail })).toEqual({ score: 0, why: 'its stack could not be unwound (no call frame information covers it, in libfoo.so)' });
  expect(judge({}, { frames: frames(LOADER[0] + 8n, 0x7f0000500001n), fail }).why).toMatch(/^inside malloc/);
});

test('a thread stopped in a system call hotload does not resume transparently is refused, naming it; one past its return is not in it', () => {
  expect(judge({ origRax: 73n, rax: -512n }, whole(PROGRAM))).toEqual({ score: 0, why: 'in system call 73 (flock), not a wait hotload may interrupt' });
  expect(judge({ origRax: 1n, rax: -38n }, whole(PROGRAM))).toEqual({ score: 0, why: 'in system call 1 (write), not a wait hotload may interrupt' }); // at its entry
  expect(judge({ origRax: 1n, rax: 5n }, whole(PROGRAM))).toEqual({ score: 1 }); // write returned 5: stopped at its exit
  expect(judge({ origRax: 219n, rax: 219n }, whole(PROGRAM))).toEqual({ score: 2 }); // restart_syscall: a wait resumed
});

test("the C library's lock-holding code: the allocator's whole object (its internal functions too), dlopen & co., dl_iterate_phdr, fork; not the rest", () => {
  const elf = ElfFile.open('/lib/x86_64-linux-gnu/libc.so.6');
  const ranges = libcLockRanges(elf);
  const fns = new Map(elf.symbols('.dynsym').filter((s) => s.type === 2 && s.size > 0).map((s) => [s.name, s]));
  const inside = (name: string) => {
    const s = fns.get(name)!;
    return ranges.some(([a, b]) => BigInt(s.value) >= a && BigInt(s.value + s.size) <= b);
  };
  for (const f of ['malloc', 'free', 'calloc', 'realloc', 'posix_memalign', 'malloc_trim', 'dlopen', 'dlclose', 'dl_iterate_phdr', 'fork', '__cxa_atexit']) expect([f, inside(f)]).toEqual([f, true]);
  for (const f of ['printf', 'qsort', 'read', 'nanosleep', 'pthread_mutex_lock', 'strtol']) expect([f, inside(f)]).toEqual([f, false]);
  // malloc.o's code before its first export (the arena code, _int_malloc...) lies in the allocator's span:
  // the span starts where the exported function below malloc's object ends.
  const alloc = ranges.find(([a, b]) => BigInt(fns.get('malloc')!.value) >= a && BigInt(fns.get('malloc')!.value) < b)!;
  const below = [...fns.values()].filter((s) => BigInt(s.value + s.size) <= alloc[0]).sort((a, b) => b.value + b.size - (a.value + a.size))[0];
  expect(BigInt(below.value + below.size)).toBe(alloc[0]);
  expect(alloc[1] - alloc[0]).toBeLessThan(0x10000n); // one object, not half the library
  expect(BigInt(fns.get('malloc')!.value) - alloc[0]).toBeGreaterThan(0x1000n); // with the internal functions before malloc
});
