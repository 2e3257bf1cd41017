// Which options take the next argument whole, per command (joinValues).
import { joinValues } from './index';

test('a value option of the command takes the next argument whole, even one starting with -', () => {
  expect(joinValues(['mkpatch', 'fix.c', '--cflags', '-I a -DX', '-o', 'p.so'])).toEqual(['mkpatch', 'fix.c', '--cflags=-I a -DX', '-o', 'p.so']);
  expect(joinValues(['mkpatch', '--cc', '-clang', 'x.c'])).toEqual(['mkpatch', '--cc=-clang', 'x.c']);
  expect(joinValues(['watch', '--pid', '1', '--build', '-j4 make'])).toEqual(['watch', '--pid', '1', '--build=-j4 make']);
});

test('the same name is a switch where the command says so: flags --cflags --diff / --json stay two switches', () => {
  expect(joinValues(['flags', '--cflags', '--diff'])).toEqual(['flags', '--cflags', '--diff']);
  expect(joinValues(['flags', '--cflags', '--json'])).toEqual(['flags', '--cflags', '--json']);
  expect(joinValues(['attach', '1', 'p.so', '--build', 'x'])).toEqual(['attach', '1', 'p.so', '--build', 'x']);
});
