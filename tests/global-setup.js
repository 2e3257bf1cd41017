// Before the test run: the list tests/helpers.ts's tmpdir() adds each
// directory it makes to (the test files run in workers that inherit this
// environment), so that global-teardown.js removes them once every test and
// every process a test started has ended. And a check that the built
// packages are those of the sources: the end-to-end tests run the CLI from
// packages/*/dist while unit tests compile packages/*/src, so after an edit
// without `npx tsc -b` the end-to-end tests would test the old code, silently.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

function staleBuilds() {
  const root = path.resolve(__dirname, '..');
  const r = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-b', '--dry'], { cwd: root, encoding: 'utf8' });
  return [...`${r.stdout}${r.stderr}`.matchAll(/A non-dry build would build project '([^']+)'/g)].map((m) => path.relative(root, path.dirname(m[1])));
}

module.exports = async () => {
  const stale = staleBuilds();
  if (stale.length) {
    throw new Error(`the built packages are older than their sources (${stale.join(', ')}): run \`npx tsc -b\` first (make test does); the end-to-end tests run packages/*/dist`);
  }
  const list = path.join(os.tmpdir(), `hotload-test-dirs-${process.pid}.txt`);
  fs.writeFileSync(list, '');
  process.env.HOTLOAD_TEST_DIRS = list;
};
