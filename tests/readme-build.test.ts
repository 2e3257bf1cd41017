// The README's build lines, taken from the README itself and run as written:
// the Makefile block of "Building a program for hotload" (and the
// `$(shell npx hotload flags --cflags)` it offers in its comment), the
// `flags --cflags --diff` line and the CMake line of the watch section. Each
// build must give what hotload needs: the pads (and, for watch, one section
// per function and datum and the types). `npx hotload` resolves from the
// checkout, so the builds run in a directory inside it.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ROOT, hotload, removeAtEnd } from './helpers';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** The fenced blocks of one language, in order. */
function blocks(lang: string): string[] {
  const re = new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g');
  return [...README.matchAll(re)].map((m) => m[1]);
}

const SERVER_C = `#include <stdio.h>
static int table[4] = {1, 2, 3, 4};
int handle(int x) { return x + table[x & 3]; }
int main(void) { printf("%d\\n", handle(1)); return 0; }
`;

function workdir(): string {
  const base = path.join(ROOT, 'fixtures/build');
  fs.mkdirSync(base, { recursive: true });
  const dir = removeAtEnd(fs.mkdtempSync(path.join(base, 'readme-')));
  fs.writeFileSync(path.join(dir, 'server.c'), SERVER_C);
  return dir;
}

function run(cmd: string, args: string[], cwd: string) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function sections(file: string): string {
  return run('readelf', ['-SW', file], path.dirname(file));
}

const makeBlocks = blocks('make');
const buildBlock = makeBlocks.find((b) => b.includes('hotload post'))!;
const diffLine = makeBlocks.map((b) => b.split('\n').find((l) => l.includes('flags --cflags --diff'))).find(Boolean)!;
const cmakeLine = blocks('cmake').map((b) => b.split('\n').find((l) => l.startsWith('add_compile_options'))).find(Boolean)!;

test('the README shows the lines this test runs', () => {
  expect(buildBlock).toMatch(/^CFLAGS \+= /m);
  expect(buildBlock).toMatch(/\$\(shell npx hotload flags --cflags\)/);
  expect(diffLine).toMatch(/^CFLAGS \+= \$\(shell npx hotload flags --cflags --diff\)/);
  expect(cmakeLine).toMatch(/^add_compile_options\(/);
});

describe.each([
  ['as written', (b: string) => b],
  ['with the $(shell npx hotload flags --cflags) its comment offers', (b: string) => b.replace(/^CFLAGS \+= .*$/m, (l) => `CFLAGS += ${/# or: (.*)$/.exec(l)![1]}`)],
])('the Makefile block of "Building a program for hotload", %s', (_name, edit) => {
  test('builds a program whose functions are all patchable, posted', async () => {
    const dir = workdir();
    fs.writeFileSync(path.join(dir, 'Makefile'), `OBJS = server.o\n${edit(buildBlock)}`);
    run('make', ['server'], dir);
    const check = await hotload(['check', path.join(dir, 'server')]);
    expect(check.stderr).toBe('');
    expect(check.code).toBe(0);
    expect(sections(path.join(dir, 'server'))).toMatch(/\.hotload\.index/); // `npx hotload post $@` ran
    const idx = await hotload(['index', path.join(dir, 'server'), '--json']);
    expect(JSON.stringify(idx.json)).toMatch(/"handle"/);
  });
});

test('the watch section\'s `CFLAGS += $(shell npx hotload flags --cflags --diff)`: pads, a section per function and datum, full types', async () => {
  const dir = workdir();
  fs.writeFileSync(path.join(dir, 'Makefile'), `${diffLine}\nserver: server.o\n\t$(CC) -o $@ server.o\n`);
  run('make', ['server'], dir);
  const s = sections(path.join(dir, 'server.o'));
  expect(s).toMatch(/\.text\.handle\b/);
  expect(s).toMatch(/\.data\.table\b/);
  expect(s).toMatch(/__patchable_function_entries/);
  expect(s).toMatch(/\.debug_info/);
  expect((await hotload(['check', path.join(dir, 'server')])).code).toBe(0);
});

test('the watch section\'s CMake line: pads, a section per function and datum, full types', () => {
  const dir = workdir();
  fs.writeFileSync(path.join(dir, 'CMakeLists.txt'), `cmake_minimum_required(VERSION 3.13)\nproject(server C)\n${cmakeLine}\nadd_executable(server server.c)\n`);
  run('cmake', ['-S', '.', '-B', 'out'], dir);
  run('cmake', ['--build', 'out'], dir);
  const obj = run('find', ['out', '-name', 'server.c.o'], dir).trim();
  const s = sections(path.join(dir, obj));
  expect(s).toMatch(/\.text\.handle\b/);
  expect(s).toMatch(/\.data\.table\b/);
  expect(s).toMatch(/__patchable_function_entries/);
  expect(s).toMatch(/\.debug_info/);
});
