import { thunkJumpOffset } from './thunk';

test('non-virtual thunks: sub or add to %rdi, then jmp rel8 or rel32 (g++ -O0)', () => {
  // sub $0x10,%rdi; jmp -0x33 (12ff: 48 83 ef 10 / eb cd)
  expect(thunkJumpOffset(Buffer.from('4883ef10ebcd90909090', 'hex'))).toBe(6 - 0x33);
  expect(thunkJumpOffset(Buffer.from('4881ef00010000e910000000', 'hex'))).toBe(12 + 0x10);
  expect(thunkJumpOffset(Buffer.from('f30f1efa4883c708e9f0ffffff', 'hex'))).toBe(13 - 0x10);
});

test('virtual thunks: this += *(vtable + disp), then the jump', () => {
  expect(thunkJumpOffset(Buffer.from('4c8b1749037ae8eb10', 'hex'))).toBe(9 + 0x10);
  expect(thunkJumpOffset(Buffer.from('4c8b174903bae8ffffffe900010000', 'hex'))).toBe(15 + 0x100);
});

test('anything else is not a thunk', () => {
  expect(thunkJumpOffset(Buffer.from('4883ef10c3', 'hex'))).toBeUndefined(); // returns, does not jump
  expect(thunkJumpOffset(Buffer.from('554889e5', 'hex'))).toBeUndefined(); // a prologue
  expect(thunkJumpOffset(Buffer.from('4883ef10e9', 'hex'))).toBeUndefined(); // cut short
  expect(thunkJumpOffset(Buffer.alloc(0))).toBeUndefined();
});
