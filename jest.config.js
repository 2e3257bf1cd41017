// Unit tests sit next to the code (packages/*/src/*.test.ts); end-to-end tests
// that run the real CLI on real processes are in tests/. Packages are mapped to
// their sources so tests need no build, but tests/ runs the built CLI, which
// `make test` builds first.
module.exports = {
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] },
  moduleNameMapper: { '^@hotload/(.*)$': '<rootDir>/packages/$1/src' },
  testMatch: ['<rootDir>/packages/*/src/**/*.test.ts', '<rootDir>/tests/**/*.test.ts'],
  testTimeout: 60000,
  // The directories tests make under the temporary directory are removed once the run ends.
  globalSetup: '<rootDir>/tests/global-setup.js',
  globalTeardown: '<rootDir>/tests/global-teardown.js',
  // `make pack` output (a copy of the packages) is not part of the tree under test.
  modulePathIgnorePatterns: ['<rootDir>/build/'],
};
