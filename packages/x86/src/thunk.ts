// C++ thunks: the small functions a compiler emits for a virtual method
// reached through a second base (`non-virtual thunk to C::b()`: `this` moved
// back by a constant) or a virtual base (`virtual thunk to ...`: by an offset
// read from the vtable), then a jump to the method. g++ emits them without a
// pad at -O0; a thunk whose jump lands on a padded entry is covered by
// patching that function.

/** The thunk's jump target as an offset from its first byte, or undefined when `b` is not such a thunk. */
export function thunkJumpOffset(b: Buffer): number | undefined {
  let at = 0;
  const is = (...xs: number[]) => xs.every((x, i) => b[at + i] === x);
  if (is(0xf3, 0x0f, 0x1e, 0xfa)) at += 4; // endbr64
  // The adjustment of `this` (%rdi).
  if (is(0x48, 0x83, 0xef) || is(0x48, 0x83, 0xc7)) at += 4; // sub/add $imm8,%rdi
  else if (is(0x48, 0x81, 0xef) || is(0x48, 0x81, 0xc7)) at += 7; // sub/add $imm32,%rdi
  else if (is(0x4c, 0x8b, 0x17)) {
    at += 3; // mov (%rdi),%r10: the vtable
    if (is(0x49, 0x03, 0x7a)) at += 4; // add disp8(%r10),%rdi
    else if (is(0x49, 0x03, 0xba)) at += 7; // add disp32(%r10),%rdi
    else return undefined;
  } else return undefined;
  // Then the jump.
  if (b[at] === 0xe9 && at + 5 <= b.length) return at + 5 + b.readInt32LE(at + 1);
  if (b[at] === 0xeb && at + 2 <= b.length) return at + 2 + b.readInt8(at + 1);
  return undefined;
}
