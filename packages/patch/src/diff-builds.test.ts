// objectFiles: the object files under a build directory, each directory read
// again only when its times changed. A file added or removed shows on the
// next call, whether the directory changed a moment ago (within the file
// system's clock tick) or long ago.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { objectFiles } from './object-files';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-objfiles-'));
  fs.mkdirSync(path.join(dir, 'sub/deep'), { recursive: true });
  for (const f of ['a.o', 'a.c', 'sub/b.o', 'sub/deep/c.o', 'sub/notes.txt']) fs.writeFileSync(path.join(dir, f), '');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const listed = () => [...objectFiles(dir).keys()].sort();

test('changes made at once after a listing show in the next one', () => {
  expect(listed()).toEqual(['a.o', 'sub/b.o', 'sub/deep/c.o']);
  fs.writeFileSync(path.join(dir, 'sub/deep/d.o'), '');
  fs.rmSync(path.join(dir, 'a.o'));
  expect(listed()).toEqual(['sub/b.o', 'sub/deep/c.o', 'sub/deep/d.o']);
  fs.mkdirSync(path.join(dir, 'new'));
  fs.writeFileSync(path.join(dir, 'new/e.o'), '');
  expect(listed()).toEqual(['new/e.o', 'sub/b.o', 'sub/deep/c.o', 'sub/deep/d.o']);
});

test('directories unchanged for a while are taken from the last listing; a change to any one of them shows', async () => {
  await new Promise((r) => setTimeout(r, 1100)); // past the racy second
  expect(listed()).toEqual(['a.o', 'sub/b.o', 'sub/deep/c.o']);
  expect(listed()).toEqual(['a.o', 'sub/b.o', 'sub/deep/c.o']); // from the listing
  fs.writeFileSync(path.join(dir, 'sub/deep/c.o'), 'rewritten'); // the same names: nothing to read again
  expect(listed()).toEqual(['a.o', 'sub/b.o', 'sub/deep/c.o']);
  fs.renameSync(path.join(dir, 'sub/b.o'), path.join(dir, 'sub/b2.o'));
  expect(listed()).toEqual(['a.o', 'sub/b2.o', 'sub/deep/c.o']);
  fs.rmSync(path.join(dir, 'sub/deep'), { recursive: true });
  expect(listed()).toEqual(['a.o', 'sub/b2.o']);
});
