// After the test run: remove the directories the tests made (see global-setup.js).
const fs = require('fs');
const os = require('os');
const path = require('path');

module.exports = async () => {
  const list = process.env.HOTLOAD_TEST_DIRS;
  if (!list || !fs.existsSync(list)) return;
  const tmp = os.tmpdir();
  for (const dir of fs.readFileSync(list, 'utf8').split('\n')) {
    // Only what tmpdir() made: a direct child of the temporary directory.
    if (!dir || path.dirname(dir) !== tmp || !path.basename(dir).startsWith('hotload-')) continue;
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch (e) {
      console.warn(`left ${dir}: ${e.message}`); // a leftover directory fails no test
    }
  }
  fs.rmSync(list, { force: true });
};
