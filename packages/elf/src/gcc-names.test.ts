import { gccSuffix } from './gcc-names';

test('cold parts have no entry of their own; partial-inlining parts and clones do', () => {
  expect(gccSuffix('f.cold')).toEqual({ kind: 'cold', base: 'f' });
  expect(gccSuffix('f.cold.3')).toEqual({ kind: 'cold', base: 'f' });
  expect(gccSuffix('f.cold@x.c')).toEqual({ kind: 'cold', base: 'f' });
  expect(gccSuffix('f.part.0')).toEqual({ kind: 'clone', base: 'f' });
  expect(gccSuffix('f.isra.0')).toEqual({ kind: 'clone', base: 'f' });
  expect(gccSuffix('f.constprop.0.isra.0')).toEqual({ kind: 'clone', base: 'f' });
  expect(gccSuffix('f.localalias')).toEqual({ kind: 'clone', base: 'f' });
  expect(gccSuffix('f.lto_priv.0')).toEqual({ kind: 'clone', base: 'f' });
});

test('plain names, and dots that are not gcc\'s', () => {
  expect(gccSuffix('main')).toBeUndefined();
  expect(gccSuffix('f@x.c')).toBeUndefined();
  expect(gccSuffix('f.hl2')).toBeUndefined();
});
