// asciiLines: raw bytes written as `.ascii` directives come out of the real
// assembler byte for byte (every byte value, quotes and backslashes, digits
// right after an escape, lines split at 4 KiB); AsciiText: any range of a
// buffer escaped once is written as asciiLines writes that range.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { AsciiText, asciiLines, functionOfPart, isColdPart } from './rebuild-asm';

function assemble(lines: string[]): Buffer {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-ascii-'));
  try {
    fs.writeFileSync(path.join(dir, 'a.s'), `\t.section .rodata\n${lines.join('\n')}\n`);
    execFileSync('as', [path.join(dir, 'a.s'), '-o', path.join(dir, 'a.o')]);
    execFileSync('objcopy', ['-O', 'binary', '-j', '.rodata', path.join(dir, 'a.o'), path.join(dir, 'a.bin')]);
    return fs.readFileSync(path.join(dir, 'a.bin'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('every byte value, and escapes followed by digits', () => {
  const data = Buffer.from([...Array(256).keys(), 0, 0x31, 0x32, 0x22, 0x5c, 0x5c, 0x0a, 0x37]);
  expect(assemble(asciiLines(data))).toEqual(data);
});

test('10,000 bytes: split into lines of 4 KiB, the same bytes', () => {
  const data = Buffer.alloc(10000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7919) & 0xff;
  const lines = asciiLines(data);
  expect(lines).toHaveLength(3);
  expect(assemble(lines)).toEqual(data);
});

test('no bytes: no lines', () => {
  expect(asciiLines(Buffer.alloc(0))).toEqual([]);
});

test('ranges of a buffer escaped once: the lines asciiLines writes for each range, and the bytes back from the assembler', () => {
  const data = Buffer.alloc(9000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 8)) & 0xff;
  const text = new AsciiText(data);
  const cuts = [0, 1, 2, 7, 100, 4095, 4096, 4097, 8191, 8999, 9000];
  for (let a = 0; a < cuts.length; a++) for (let b = a; b < cuts.length; b++) expect(text.lines(cuts[a], cuts[b])).toEqual(asciiLines(data.subarray(cuts[a], cuts[b])));
  const pieces = [0, 5, 4200, 9000];
  const lines = pieces.slice(1).flatMap((end, i) => text.lines(pieces[i], end));
  expect(assemble(lines)).toEqual(data);
});

test('functionOfPart: a cold part or a partial-inlining part belongs to its function; clones and plain names to themselves', () => {
  expect(functionOfPart('f.cold@x.c')).toEqual(['f@x.c', 'f']);
  expect(functionOfPart('f.cold')).toEqual(['f', 'f']);
  expect(functionOfPart('f.part.0@x.c')).toEqual(['f@x.c', 'f']);
  expect(functionOfPart('f.isra.0@x.c')).toEqual(['f.isra.0@x.c']);
  expect(functionOfPart('main')).toEqual(['main']);
  expect(isColdPart('f.cold.1')).toBe(true);
  expect(isColdPart('f.part.0')).toBe(false);
});
