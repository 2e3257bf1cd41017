// C++ names demangled by c++filt; others untouched; the @file suffix of statics kept.
import { demangle, demangled, findByCxxName } from './demangle';

test('mangled names come back as C++ names; plain ones are left out of the map', () => {
  const m = demangle(['_ZNK6Square4areaEv', '_ZN4UserC2Ei@user.cpp', 'compute', '_Znot_valid']);
  expect(m.get('_ZNK6Square4areaEv')).toBe('Square::area() const');
  expect(m.get('_ZN4UserC2Ei@user.cpp')).toBe('User::User(int)@user.cpp');
  expect(m.has('compute')).toBe(false);
  expect(m.has('_Znot_valid')).toBe(false);
  expect(demangled('_Z10make_namesB5cxx11i')).toBe('make_names[abi:cxx11](int)');
  expect(demangled('main')).toBe('main');
});

test('findByCxxName: ABI tags may be left out, as source writes the name; given, they match too', () => {
  const items = ['_Z10make_namesB5cxx11i', '_ZN1S4nameB5cxx11Eb', '_Z11count_namesi'];
  const find = (w: string) => findByCxxName(items, (x) => [x], w);
  expect(find('make_names(int)')).toBe('_Z10make_namesB5cxx11i');
  expect(find('make_names[abi:cxx11](int)')).toBe('_Z10make_namesB5cxx11i');
  expect(find('S::name(bool)')).toBe('_ZN1S4nameB5cxx11Eb');
  expect(find('S::name')).toBe('_ZN1S4nameB5cxx11Eb');
  expect(find('count_names(int)')).toBe('_Z11count_namesi');
  expect(find('S::name(int)')).toBeUndefined();
});
