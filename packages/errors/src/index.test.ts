// isHotloadError across two copies of the package: a script and a tool that
// each installed hotload load two modules, with two HotloadError classes.
import { HotloadError, isHotloadError } from './index';

type ErrorsModule = typeof import('./index');

/** A second copy of this module, as a second installed package would load it. */
function otherCopy(): ErrorsModule {
  let m: ErrorsModule | undefined;
  jest.isolateModules(() => {
    m = jest.requireActual<ErrorsModule>('./index');
  });
  return m!;
}

test('an error made by another copy of the package is a HotloadError to this one', () => {
  const other = otherCopy();
  expect(other.HotloadError).not.toBe(HotloadError); // two classes, as with two installs
  const e = new other.HotloadError('USAGE', 'bad pid');
  expect(isHotloadError(e)).toBe(true);
  expect(other.isHotloadError(new HotloadError('PID_NOT_FOUND', 'gone'))).toBe(true);
  expect(e instanceof HotloadError).toBe(true);
  if (isHotloadError(e)) expect(e.code).toBe('USAGE');
});

test('lookalikes are not HotloadErrors', () => {
  for (const v of [undefined, null, 'USAGE', 42, new Error('x'), Object.assign(new Error('x'), { code: 'USAGE', hint: 'h' }), { code: 'USAGE', message: 'm', hint: 'h', details: [] }]) {
    expect(isHotloadError(v)).toBe(false);
    expect(v instanceof HotloadError).toBe(false);
  }
});

test('the brand stays out of JSON and of the error\'s own keys', () => {
  const e = new HotloadError('USAGE', 'bad', { details: ['a'] });
  expect(JSON.parse(JSON.stringify(e))).toEqual({ code: 'USAGE', message: 'bad', hint: e.hint, details: ['a'] });
  expect(Object.getOwnPropertySymbols({ ...e })).toEqual([]); // not enumerable: a copied error is not branded
});
