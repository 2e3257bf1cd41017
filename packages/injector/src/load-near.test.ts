// Where a patch from a rebuild goes: within reach of the module, below it if
// there is room, never over a mapping.
import { chooseAddress } from './load-near';
import type { Mapping } from './read-process';

const m = (start: bigint, end: bigint): Mapping => ({ start, end, perms: 'r--p', offset: 0n, inode: 1, path: '/x' });
const G = 2n ** 30n;
const lo = 0x555555554000n;
const hi = 0x555555559000n;
const exe = [m(lo, hi), m(hi, hi + 0x21000n)]; // the program and its heap

test('just below the program, a page apart', () => {
  const at = chooseAddress(exe, lo, hi, 0x3000n)!;
  expect(at + 0x3000n).toBeLessThanOrEqual(lo - 0x1000n);
  expect(lo - at).toBeLessThan(0x10000n);
});

test('past mappings below the program (earlier patches), still within reach', () => {
  const taken = [...exe, m(lo - 0x10000n, lo), m(lo - 0x30000n, lo - 0x12000n)];
  const at = chooseAddress(taken, lo, hi, 0x3000n)!;
  for (const t of taken) expect(at + 0x3000n <= t.start || at >= t.end).toBe(true);
  expect(hi - at).toBeLessThan(2n * G);
});

test('above the program when everything below within reach is taken', () => {
  const full = [...exe, m(lo - 2n * G, lo)];
  const at = chooseAddress(full, lo, hi, 0x3000n)!;
  expect(at).toBeGreaterThanOrEqual(hi + 0x21000n);
  expect(at + 0x3000n - lo).toBeLessThan(2n * G);
});

test('nothing free within reach: undefined (attach reports PATCH_NO_ROOM)', () => {
  expect(chooseAddress([...exe, m(lo - 2n * G, lo), m(hi, lo + 2n * G + G)], lo, hi, 0x3000n)).toBeUndefined();
});
