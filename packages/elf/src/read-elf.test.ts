// The ELF reader against readelf, on our fixtures and on system files, and on
// malformed input.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { ElfFile, SHF, perFile } from './read-elf';

const FIX = path.resolve(__dirname, '../../../fixtures/build');
const readelf = (args: string[], file: string) => spawnSync('readelf', [...args, file], { encoding: 'utf8' }).stdout;
const libc = fs.realpathSync('/lib/x86_64-linux-gnu/libc.so.6');
const FILES = [`${FIX}/pads-O2`, `${FIX}/pads-O2-nopie`, `${FIX}/libpads.so`, `${FIX}/pads-clang-O2`, '/usr/bin/ls', libc];

describe.each(FILES)('%s matches readelf', (file) => {
  const elf = ElfFile.open(file);

  test('section headers: name, type, address, offset, size, entsize, flags, link, info, alignment', () => {
    const rows = readelf(['-SW'], file)
      .split('\n')
      .map((l) => /^\s*\[\s*(\d+)\] (.*?)\s+(\S+)\s+([0-9a-f]{16}) ([0-9a-f]{6,}) ([0-9a-f]{6,}) ([0-9a-f]{2}) (.{3}) +(\d+) +(\d+) +(\d+)$/.exec(l))
      .filter((m): m is RegExpExecArray => !!m);
    expect(rows.length).toBe(elf.sections.length);
    expect(rows.length).toBeGreaterThan(10);
    for (const m of rows) {
      const s = elf.sections[Number(m[1])];
      expect(s.name).toBe(m[2].trim());
      expect(s.addr).toBe(parseInt(m[4], 16));
      expect(s.offset).toBe(parseInt(m[5], 16));
      expect(s.size).toBe(parseInt(m[6], 16));
      expect(s.entsize).toBe(parseInt(m[7], 16)); // elfy reads this from offset 54 (wrong)
      expect(s.link).toBe(Number(m[9]));
      expect(s.info).toBe(Number(m[10]));
      expect(s.addralign).toBe(Number(m[11])); // elfy reads this from offset 46 (wrong)
      expect(((s.flags & 2) !== 0) === m[8].includes('A')).toBe(true);
      expect(((s.flags & 4) !== 0) === m[8].includes('X')).toBe(true);
    }
  });

  test('program headers', () => {
    const rows = readelf(['-lW'], file)
      .split('\n')
      .map((l) => /^\s+([A-Z_0-9a-z]+)\s+0x([0-9a-f]+) 0x([0-9a-f]+) 0x([0-9a-f]+) 0x([0-9a-f]+) 0x([0-9a-f]+) (.{3}) 0x([0-9a-f]+)$/.exec(l))
      .filter((m): m is RegExpExecArray => !!m);
    expect(rows.length).toBe(elf.programs.length);
    rows.forEach((m, i) => {
      const p = elf.programs[i];
      expect([p.offset, p.vaddr, p.paddr, p.filesz, p.memsz, p.align]).toEqual([2, 3, 4, 5, 6, 8].map((k) => parseInt(m[k], 16)));
      expect(((p.flags & 1) !== 0) === m[7].includes('E')).toBe(true);
    });
  });

  test('symbols of .symtab and .dynsym, with versions', () => {
    for (const [which, flag] of [['.dynsym', '--dyn-syms'], ['.symtab', '--syms']] as const) {
      const out = readelf(['-W', flag], file);
      const header = new RegExp(`Symbol table '\\${which}' contains (\\d+) entries`).exec(out);
      const syms = elf.symbols(which);
      expect(syms.length).toBe(header ? Number(header[1]) : 0);
      const section = header ? out.slice(header.index).split('\n\n')[0] : '';
      const rows = section.split('\n').map((l) => /^\s*(\d+): ([0-9a-f]{16})\s+(\d+|0x[0-9a-f]+) \S+\s+\S+\s+\S+\s+\S+ ?(.*)$/.exec(l)).filter((m): m is RegExpExecArray => !!m);
      expect(rows.length).toBe(syms.length);
      for (const m of rows) {
        const s = syms[Number(m[1])];
        expect(s.value).toBe(parseInt(m[2], 16));
        expect(s.size).toBe(Number(m[3]));
        // readelf prints name@VERSION (or @@ for the default) and may add " (N)".
        const shown = m[4].replace(/ \(\d+\)$/, '');
        if (shown.endsWith('[...]')) continue;
        if (which === '.dynsym') {
          const [name, version] = shown.split(/@@?/);
          expect(s.name).toBe(name);
          if (version) expect(s.version).toBe(version);
        } else {
          expect(s.name).toBe(shown); // .symtab strings carry "@VERSION" literally
        }
      }
    }
  });

  test('build-id, dynamic section and relocation counts', () => {
    const id = /Build ID: ([0-9a-f]+)/.exec(readelf(['-n'], file));
    expect(elf.buildId()).toBe(id ? id[1] : undefined);
    const dyn = /Dynamic section at offset 0x[0-9a-f]+ contains (\d+) entries/.exec(readelf(['-dW'], file));
    expect(elf.dynamic().length + 1).toBe(Number(dyn![1])); // readelf counts the DT_NULL
    const rela = readelf(['-rW'], file).matchAll(/Relocation section '(\.rela\S+)' at offset 0x[0-9a-f]+ contains (\d+) entr/g);
    for (const m of rela) {
      expect(elf.relocations(m[1]).length).toBe(Number(m[2]));
    }
  });
});

describe('malformed input gets a clear error naming the file', () => {
  // Made before the tests, not while jest collects them: a run that filters them all out (-t) runs no afterAll to remove it.
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-elf-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const good = fs.readFileSync(`${FIX}/pads-O2`);
  const write = (name: string, b: Buffer) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, b);
    return p;
  };
  const expectError = (p: string, code: string, text: RegExp) => {
    let err: unknown;
    try {
      const e = ElfFile.open(p);
      e.symbols('.symtab');
      e.notes();
    } catch (x) {
      err = x;
    }
    expect(err).toBeInstanceOf(HotloadError);
    expect((err as HotloadError).code).toBe(code);
    expect((err as HotloadError).message).toContain(p);
    expect((err as HotloadError).message).toMatch(text);
  };

  test('missing file', () => expectError(path.join(dir, 'nope'), 'FILE_NOT_FOUND', /no such file/));
  test('not ELF', () => expectError(write('script', Buffer.from('#!/bin/sh\necho hi\n')), 'ELF_NOT_ELF', /not an ELF file/));
  test('empty file', () => expectError(write('empty', Buffer.alloc(0)), 'ELF_NOT_ELF', /not an ELF file/));
  test('truncated header', () => expectError(write('trunc-hdr', good.subarray(0, 40)), 'ELF_MALFORMED', /truncated ELF header/));
  test('truncated body', () => expectError(write('trunc', good.subarray(0, 4096)), 'ELF_MALFORMED', /outside the file/));
  test('32-bit', () => {
    const b = Buffer.from(good);
    b[4] = 1;
    expectError(write('elf32', b), 'ELF_UNSUPPORTED', /32-bit/);
  });
  test('big-endian', () => {
    const b = Buffer.from(good);
    b[5] = 2;
    expectError(write('be', b), 'ELF_UNSUPPORTED', /big-endian/);
  });
  test('another machine', () => {
    const b = Buffer.from(good);
    b.writeUInt16LE(183, 18); // EM_AARCH64
    expectError(write('arm', b), 'ELF_UNSUPPORTED', /not x86-64/);
  });
  test('section header table offset past the end', () => {
    const b = Buffer.from(good);
    b.writeBigUInt64LE(BigInt(good.length + 100), 40);
    expectError(write('badshoff', b), 'ELF_MALFORMED', /section header table lies outside the file/);
  });
  test('a section whose data runs past the end', () => {
    const elf = new ElfFile('x', good);
    const b = Buffer.from(good);
    const symtab = elf.sections.find((s) => s.name === '.symtab')!;
    b.writeBigUInt64LE(BigInt(good.length), elf.header.shoff + symtab.index * 64 + 32);
    expectError(write('badsize', b), 'ELF_MALFORMED', /section \.symtab lies outside the file/);
  });
});

test('a compressed section (-gz) reads as the bytes objcopy decompresses', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-gz-'));
  const src = path.join(dir, 'x.c');
  fs.writeFileSync(src, 'int f(int x) { return x + 1; }\n');
  const z = path.join(dir, 'z.o');
  const plain = path.join(dir, 'plain.o');
  execFileSync('gcc', ['-O2', '-g', '-gz=zlib', '-c', src, '-o', z]);
  execFileSync('objcopy', ['--decompress-debug-sections', z, plain]);
  const ez = ElfFile.open(z);
  const ep = ElfFile.open(plain);
  const info = ez.section('.debug_info')!;
  expect(info.flags & SHF.COMPRESSED).toBeTruthy();
  expect(ez.sectionContents(info).equals(ep.sectionData(ep.section('.debug_info')!))).toBe(true);
  const bad = Buffer.from(ez.buf);
  bad.fill(0xff, info.offset + 24, info.offset + 40); // the zlib stream, broken
  expect(() => new ElfFile(z, bad).sectionContents(info)).toThrow(/does not inflate/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('stringAt reads the NUL-terminated string at a virtual address: the program interpreter, as readelf names it; nothing outside the file', () => {
  const elf = ElfFile.open(`${FIX}/pads-O2`);
  const interp = elf.section('.interp')!;
  expect(elf.stringAt(interp.addr)).toBe(/Requesting program interpreter: (\S+)\]/.exec(readelf(['-l'], `${FIX}/pads-O2`))![1]);
  expect(elf.stringAt(0x7fff0000)).toBeUndefined();
});

test('perFile: one answer per file, kept (undefined too); another file, or the file changed on disk, is asked again', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-perfile-'));
  try {
    const a = path.join(dir, 'a');
    fs.copyFileSync(`${FIX}/libpads.so`, a);
    const asked: string[] = [];
    const nothing = perFile((elf) => {
      asked.push(elf.path);
      return undefined;
    });
    expect(nothing(ElfFile.open(a))).toBeUndefined();
    expect(nothing(ElfFile.open(a))).toBeUndefined(); // the same ElfFile: not asked again
    expect(nothing(ElfFile.open(`${FIX}/pads-O2`))).toBeUndefined();
    expect(asked).toEqual([a, `${FIX}/pads-O2`]);
    fs.appendFileSync(a, Buffer.alloc(16)); // another size: ElfFile.open reads it anew
    nothing(ElfFile.open(a));
    expect(asked).toEqual([a, `${FIX}/pads-O2`, a]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
