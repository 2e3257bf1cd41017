// linkPatch: the driver's plan read from `cc -###` (GCC's, as Debian's gcc 12
// prints it; anything else is left to the driver), and a real link through
// the assembler and the linker directly giving the same shared object as the
// driver (the name of the intermediate object file aside).
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ElfFile } from '@hotload/elf';
import { PATCH_LINK_FLAGS, driverWords, linkPatch, linkPlan, parseDriverPlan } from './link-patch';
import { Ran, Runner, runProgram } from './run-program';

const GCC = [
  'Using built-in specs.',
  'COLLECT_GCC=cc',
  ' as --64 -o /tmp/cc6aWW2b.o hotload-in.s',
  'COLLECT_GCC_OPTIONS=\'-shared\' \'-nostdlib\'',
  ' /usr/lib/gcc/x86_64-linux-gnu/12/collect2 -plugin /usr/lib/gcc/x86_64-linux-gnu/12/liblto_plugin.so "-plugin-opt=/usr/lib/gcc/x86_64-linux-gnu/12/lto-wrapper" "-plugin-opt=-fresolution=/tmp/ccsyzaUZ.res" --build-id --eh-frame-hdr -m elf_x86_64 "--hash-style=gnu" --as-needed -shared -o hotload-out.so -L/usr/lib/gcc/x86_64-linux-gnu/12 --build-id --eh-frame-hdr -z noexecstack -z now /tmp/cc6aWW2b.o',
].join('\n');

test('the words of a -### line: quoted ones unquoted, backslashes inside them taken for what they escape', () => {
  expect(driverWords(' /x/collect2 -plugin a.so "-plugin-opt=b c" "q\\"d" plain')).toEqual(['/x/collect2', '-plugin', 'a.so', '-plugin-opt=b c', 'q"d', 'plain']);
});

test("GCC's plan: as, then ld with collect2's arguments less the LTO plugin; the temporary object a placeholder", () => {
  const plan = parseDriverPlan(GCC, '/usr/bin/ld')!;
  expect(plan.as).toEqual({ file: 'as', args: ['--64', '-o', '\0obj', 'hotload-in.s'] });
  expect(plan.ld.file).toBe('/usr/bin/ld');
  expect(plan.ld.args).toEqual(['--build-id', '--eh-frame-hdr', '-m', 'elf_x86_64', '--hash-style=gnu', '--as-needed', '-shared', '-o', 'hotload-out.so', '-L/usr/lib/gcc/x86_64-linux-gnu/12', '--build-id', '--eh-frame-hdr', '-z', 'noexecstack', '-z', 'now', '\0obj']);
});

test('any other plan is left to the driver: one step (clang assembles itself), another assembler, no temporary object', () => {
  expect(parseDriverPlan(' "/usr/bin/ld" "-shared" "-o" "hotload-out.so" "/tmp/x.o"', 'ld')).toBeUndefined();
  expect(parseDriverPlan(GCC.replace(' as --64', ' /opt/other-as --64'), 'ld')).toBeUndefined();
  expect(parseDriverPlan(GCC.replace('-z now /tmp/cc6aWW2b.o', '-z now'), 'ld')).toBeUndefined();
  expect(parseDriverPlan('', 'ld')).toBeUndefined();
});

describe('a real link', () => {
  let dir: string;
  const SRC = '\t.text\n\t.globl f\n\t.type f, @function\nf:\nhl.local:\n\tmovl $42, %eax\n\tret\n\t.size f, .-f\n\t.section .note.GNU-stack,"",@progbits\n';
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-link-'));
    fs.writeFileSync(path.join(dir, 'patch.s'), SRC);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('as and ld run directly make what the driver makes', async () => {
    const ran: string[] = [];
    const run: Runner = (file, args, opts) => {
      ran.push([path.basename(file), ...args].join(' '));
      return runProgram(file, args, opts);
    };
    const r: Ran = await linkPatch('cc', 'patch.s', 'direct.so', dir, run);
    expect(r.status).toBe(0);
    // The driver is asked its plan (what it would run, where its ld is), then
    // not run: one shell runs as, then ld (the driver would name its object
    // file at random; this one is hotload-patch.o).
    expect(ran.slice(0, 2).map((x) => x.split(' ')[0])).toEqual(['cc', 'cc']);
    expect(ran[2]).toMatch(/^sh -c as .* && \S*ld .*hotload-patch\.o/);
    expect(ran).toHaveLength(3);
    expect(new ElfFile('direct.so', fs.readFileSync(path.join(dir, 'direct.so'))).symbols('.symtab').some((x) => x.name === 'hotload-patch.o')).toBe(true);
    execFileSync('cc', [...PATCH_LINK_FLAGS, 'patch.s', '-o', 'driver.so'], { cwd: dir });
    const sections = (f: string) => {
      const e = new ElfFile(f, fs.readFileSync(path.join(dir, f)));
      return e.sections.filter((s) => s.name && !['.symtab', '.strtab', '.note.gnu.build-id'].includes(s.name)).map((s) => [s.name, s.addr, e.sectionContents(s).toString('hex')]);
    };
    expect(sections('direct.so')).toEqual(sections('driver.so'));
    expect(new ElfFile('direct.so', fs.readFileSync(path.join(dir, 'direct.so'))).buildId()).toBeTruthy();
  });

  test('a compiler whose plan is not understood is run as the driver', async () => {
    // A wrapper script whose -### plan is one step hotload does not know; it links through cc.
    const wrapper = path.join(dir, 'mycc');
    fs.writeFileSync(wrapper, '#!/bin/sh\ncase "$1" in -###) echo " /opt/strange-as x" >&2; exit 0;; esac\nexec cc "$@"\n', { mode: 0o755 });
    const ran: string[] = [];
    const run: Runner = (file, args, opts) => {
      ran.push(path.basename(file));
      return runProgram(file, args, opts);
    };
    const r = await linkPatch(wrapper, 'patch.s', 'wrapped.so', dir, run);
    expect(r.status).toBe(0);
    expect(ran).toEqual(['mycc', 'mycc', 'mycc']); // asked its plan twice, then linking
    expect(fs.existsSync(path.join(dir, 'wrapped.so'))).toBe(true);
  });
});

test('a runner that fails while the plan is asked leaves the link to the driver (and nothing unhandled)', async () => {
  let calls = 0;
  const failing: Runner = () => {
    calls++;
    return Promise.reject(new Error('helper gone'));
  };
  await expect(linkPlan('cc-that-fails-to-ask', failing)).resolves.toBeUndefined();
  expect(calls).toBe(2);
});
