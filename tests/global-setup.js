// Before the test run: the list tests/helpers.ts's tmpdir() adds each
// directory it makes to (the test files run in workers that inherit this
// environment), so that global-teardown.js removes them once every test and
// every process a test started has ended.
const fs = require('fs');
const os = require('os');
const path = require('path');

module.exports = async () => {
  const list = path.join(os.tmpdir(), `hotload-test-dirs-${process.pid}.txt`);
  fs.writeFileSync(list, '');
  process.env.HOTLOAD_TEST_DIRS = list;
};
