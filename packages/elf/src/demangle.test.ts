// C++ names demangled by c++filt; others untouched; the @file suffix of statics kept.
import { demangle, demangled } from './demangle';

test('mangled names come back as C++ names; plain ones are left out of the map', () => {
  const m = demangle(['_ZNK6Square4areaEv', '_ZN4UserC2Ei@user.cpp', 'compute', '_Znot_valid']);
  expect(m.get('_ZNK6Square4areaEv')).toBe('Square::area() const');
  expect(m.get('_ZN4UserC2Ei@user.cpp')).toBe('User::User(int)@user.cpp');
  expect(m.has('compute')).toBe(false);
  expect(m.has('_Znot_valid')).toBe(false);
  expect(demangled('_Z10make_namesB5cxx11i')).toBe('make_names[abi:cxx11](int)');
  expect(demangled('main')).toBe('main');
});
