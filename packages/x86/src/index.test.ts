// The bytes hotload writes into a pad and recognises there, and the call
// stub's offsets, checked against two references that are not this module:
// binutils' disassembler (objdump) decodes every encoding, and the C
// library's and the kernel's headers (compiled by gcc) give the layout of the
// signal frame the stub reads its registers from.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  CALL_STUB,
  CALL_STUB_SIGPROCMASK_END,
  CALL_STUB_SIGRETURN_END,
  ENDBR64,
  JMP_RIP_INDIRECT,
  NOP2,
  PAD_AT,
  PAD_BEFORE,
  PAD_JUMP_ADDRESS,
  classifyEntryBytes,
  decodePadJump,
  entryJump,
  entryNopOffset,
  isNopRun,
  padJump,
  startsWithEndbr,
} from './index';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-x86-test-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Insn {
  at: number;
  bytes: string;
  text: string;
}

/** objdump's decoding of raw x86-64 bytes, as if loaded at `vma`. */
function disassemble(code: Buffer, vma = 0n): Insn[] {
  const f = path.join(dir, `code-${Math.random().toString(36).slice(2)}.bin`);
  fs.writeFileSync(f, code);
  const r = spawnSync('objdump', ['-D', '-b', 'binary', '-mi386:x86-64', `--adjust-vma=0x${vma.toString(16)}`, f], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`objdump failed: ${r.stderr}`);
  const out: Insn[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)$/.exec(line);
    if (m) out.push({ at: parseInt(m[1], 16), bytes: m[2].replace(/ /g, ''), text: m[3].replace(/\s+/g, ' ').trim() });
    else {
      // A long instruction's bytes continue on a line of their own.
      const c = /^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*$/.exec(line);
      if (c && out.length) out[out.length - 1].bytes += c[2].replace(/ /g, '');
    }
  }
  return out;
}

describe('the pad', () => {
  test('its shape: 14 bytes before the entry, 2 at it, 16 in all (-fpatchable-function-entry=16,14)', () => {
    expect(PAD_BEFORE + PAD_AT).toBe(16);
    expect(PAD_BEFORE).toBe(14);
    expect(PAD_JUMP_ADDRESS).toBe(6);
  });

  test.each([
    [false, 0],
    [true, 4],
  ])('entryJump(endbr64 %s): a 2-byte jmp from the patchable site to the pad\'s first byte', (endbr, site) => {
    const j = entryJump(endbr);
    expect(j).toHaveLength(PAD_AT);
    expect(entryNopOffset(endbr)).toBe(site);
    // Laid out as in memory: the pad at 0x1000, the entry at 0x1000 + 14.
    const pad = 0x1000n;
    const entry = pad + BigInt(PAD_BEFORE);
    const code = Buffer.concat([Buffer.alloc(PAD_BEFORE, 0x90), endbr ? ENDBR64 : Buffer.alloc(0), j]);
    const insns = disassemble(code, pad);
    const jmp = insns.find((i) => i.at === Number(entry) + site)!;
    expect(jmp.bytes).toBe(j.toString('hex'));
    expect(jmp.text).toBe(`jmp 0x${pad.toString(16)}`);
    if (endbr) expect(insns.find((i) => i.at === Number(entry))!.text).toBe('endbr64');
    // The jump is recognised, and nothing else that fits in two bytes is.
    expect(classifyEntryBytes(j, endbr)).toBe('jump');
    expect(classifyEntryBytes(j, !endbr)).toBe('other');
  });

  test.each([0n, 1n, 0x7f3f4d04f110n, 0xffffffffffffffffn, 0x0102030405060708n])('padJump(0x%s): jmp *0(%%rip) then the address; decodePadJump gives it back', (target) => {
    const b = padJump(target);
    expect(b).toHaveLength(PAD_BEFORE);
    expect(b.subarray(0, 6)).toEqual(JMP_RIP_INDIRECT);
    expect(b.readBigUInt64LE(PAD_JUMP_ADDRESS)).toBe(target);
    expect(decodePadJump(b)).toBe(target);
    const [first] = disassemble(b);
    expect(first).toMatchObject({ at: 0, bytes: 'ff2500000000' });
    expect(first.text).toMatch(/^jmp \*0x0\(%rip\)/); // reads the 8 bytes right after itself
    // In a longer buffer (the pad read with the entry), only the first 14 bytes count.
    expect(decodePadJump(Buffer.concat([b, entryJump(false)]))).toBe(target);
  });

  test('decodePadJump: NOPs, a cut-short buffer, another jump are not the pad jump', () => {
    expect(decodePadJump(Buffer.alloc(PAD_BEFORE, 0x90))).toBeUndefined();
    expect(decodePadJump(padJump(0x1234n).subarray(0, 13))).toBeUndefined();
    const other = padJump(0x1234n);
    other[2] = 0x10; // jmp *0x10(%rip): not ours
    expect(decodePadJump(other)).toBeUndefined();
    expect(decodePadJump(Buffer.alloc(0))).toBeUndefined();
  });

  test('classifyEntryBytes: nop nop, the posted 2-byte NOP, the jump, anything else; at an offset; short buffers', () => {
    expect(classifyEntryBytes(Buffer.from([0x90, 0x90]), false)).toBe('nop');
    expect(classifyEntryBytes(NOP2, false)).toBe('posted');
    expect(classifyEntryBytes(NOP2, true)).toBe('posted');
    expect(classifyEntryBytes(Buffer.from([0x55, 0x48]), false)).toBe('other'); // push %rbp: built without pads
    expect(classifyEntryBytes(Buffer.from([0x90, 0x66]), false)).toBe('other');
    expect(classifyEntryBytes(Buffer.from([0xeb, 0xf1]), false)).toBe('other'); // a jmp, but not to the pad
    expect(classifyEntryBytes(Buffer.from([0x90]), false)).toBe('other');
    const withEndbr = Buffer.concat([ENDBR64, entryJump(true)]);
    expect(classifyEntryBytes(withEndbr, true, entryNopOffset(true))).toBe('jump');
    expect(classifyEntryBytes(withEndbr, true, 3)).toBe('other');
    expect(classifyEntryBytes(withEndbr, true, 5)).toBe('other'); // one byte left
    // The posted NOP is what objdump calls the 2-byte NOP.
    expect(disassemble(NOP2)[0].text).toBe('xchg %ax,%ax');
    expect(disassemble(ENDBR64)[0].text).toBe('endbr64');
  });

  test('startsWithEndbr and isNopRun, with offsets and bounds', () => {
    const b = Buffer.concat([Buffer.alloc(14, 0x90), ENDBR64, NOP2]);
    expect(startsWithEndbr(b, 14)).toBe(true);
    expect(startsWithEndbr(b, 13)).toBe(false);
    expect(startsWithEndbr(b, 16)).toBe(false);
    expect(startsWithEndbr(ENDBR64.subarray(0, 3))).toBe(false);
    expect(isNopRun(b, 0, 14)).toBe(true);
    expect(isNopRun(b, 0, 15)).toBe(false);
    expect(isNopRun(b, -1, 2)).toBe(false);
    expect(isNopRun(b, 10, 20)).toBe(false); // past the end
    expect(isNopRun(b, 5, 0)).toBe(true);
  });

  test('a whole patched pad decodes as the jump chain: entry -> pad -> target', () => {
    const target = 0x7f0000001000n;
    const pad = 0x400000n;
    for (const endbr of [false, true]) {
      const code = Buffer.concat([padJump(target), endbr ? ENDBR64 : Buffer.alloc(0), entryJump(endbr)]);
      // The pad's address bytes are data: the entry is decoded on its own, where it lies.
      const insns = disassemble(code.subarray(PAD_BEFORE), pad + BigInt(PAD_BEFORE));
      const entryJmp = insns.find((i) => i.at === Number(pad) + PAD_BEFORE + entryNopOffset(endbr))!;
      expect(entryJmp.text).toBe(`jmp 0x${pad.toString(16)}`);
      expect(disassemble(code.subarray(0, 6), pad)[0].text).toMatch(/^jmp \*0x0\(%rip\)/);
      expect(decodePadJump(code)).toBe(target);
    }
  });
});

describe('the call stub', () => {
  const insns = disassemble(CALL_STUB);
  const at = (off: number) => insns.find((i) => i.at === off);

  test('decodes whole: every byte belongs to an instruction, the last one is its end', () => {
    expect(insns.map((i) => i.bytes).join('')).toBe(CALL_STUB.toString('hex'));
    expect(insns.some((i) => /\(bad\)/.test(i.text))).toBe(false);
    expect(insns[insns.length - 1].text).toBe('jmp *%rcx');
  });

  test('CALL_STUB_SIGRETURN_END and CALL_STUB_SIGPROCMASK_END are just past the syscall of rt_sigreturn (15) and of rt_sigprocmask (14)', () => {
    const syscalls = insns.filter((i) => i.text === 'syscall').map((i) => i.at + 2);
    expect(syscalls).toEqual([CALL_STUB_SIGRETURN_END, CALL_STUB_SIGPROCMASK_END]);
    const numberBefore = (end: number) => {
      const before = insns.filter((i) => i.at < end - 2 && /,%eax$/.test(i.text)).pop()!;
      return parseInt(/^mov \$0x([0-9a-f]+),%eax$/.exec(before.text)![1], 16);
    };
    expect(numberBefore(CALL_STUB_SIGRETURN_END)).toBe(15); // __NR_rt_sigreturn
    expect(numberBefore(CALL_STUB_SIGPROCMASK_END)).toBe(14); // __NR_rt_sigprocmask
  });

  test('every jump lands on an instruction: way 0 loops on rt_sigreturn, ways 1 and 2 part at xrstor/fxrstor and meet at the registers', () => {
    const targets = insns.filter((i) => /^j[a-z]+ 0x/.test(i.text)).map((i) => ({ from: i.at, to: parseInt(/0x([0-9a-f]+)/.exec(i.text)![1], 16), text: i.text }));
    expect(targets).toHaveLength(4);
    for (const t of targets) expect(at(t.to)).toBeDefined();
    const [toUser, again, toFx, toGprs] = targets;
    expect(toUser.text).toMatch(/^jne/);
    expect(at(toUser.to)!.text).toBe('mov $0xe,%eax');
    expect(at(again.to)!.text).toBe('mov $0xf,%eax');
    expect(toFx.text).toMatch(/^je/);
    expect(at(toFx.to)!.text).toMatch(/^fxrstor64 /);
    expect(at(toGprs.to)!.text).toMatch(/^push 0x[0-9a-f]+\(%rsp\)$/);
    expect(insns.some((i) => /^xrstor64 /.test(i.text))).toBe(true);
  });

  test('the offsets it reads match the signal frame as the C library and the kernel lay it out', () => {
    // rsp points at the ucontext when the stub reads it (after `lea 0x10(%rsp),%rsp`).
    const src = path.join(dir, 'layout.c');
    fs.writeFileSync(
      src,
      `#define _GNU_SOURCE
#include <stdio.h>
#include <stddef.h>
#include <ucontext.h>
#include <asm/sigcontext.h>
#define G(r) offsetof(ucontext_t, uc_mcontext.gregs[REG_##r])
int main(void) {
  printf("%zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu\\n",
    G(R8), G(R9), G(R10), G(R11), G(R12), G(R13), G(R14), G(R15), G(RDI), G(RSI), G(RBP), G(RBX), G(RDX), G(RAX), G(RCX), G(RSP), G(RIP), G(EFL),
    offsetof(ucontext_t, uc_mcontext.fpregs), offsetof(ucontext_t, uc_sigmask),
    offsetof(struct _fpstate_64, sw_reserved) + offsetof(struct _fpx_sw_bytes, xfeatures));
  return 0;
}
`,
    );
    const exe = path.join(dir, 'layout');
    const cc = spawnSync('cc', [src, '-o', exe], { encoding: 'utf8' });
    expect(cc.stderr).toBe('');
    const [r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, efl, fpregs, sigmask, xfeatures] = spawnSync(exe, { encoding: 'utf8' }).stdout.trim().split(' ').map(Number);
    const hex = (n: number) => `0x${n.toString(16)}`;
    const load = (reg: string) => insns.find((i) => new RegExp(`^mov (0x[0-9a-f]+)\\(%rsp\\),%${reg}$`).test(i.text));
    const off = (reg: string) => parseInt(/^mov (0x[0-9a-f]+)/.exec(load(reg)!.text)![1], 16);
    expect(insns.find((i) => /^lea /.test(i.text) && /,%rsp$/.test(i.text))!.text).toBe('lea 0x10(%rsp),%rsp');
    expect({ r8: off('r8'), r9: off('r9'), r10: off('r10'), r11: off('r11'), r12: off('r12'), r13: off('r13'), r14: off('r14'), r15: off('r15'), rdi: off('rdi'), rsi: off('rsi'), rdx: off('rdx'), rax: off('rax'), rsp: off('rsp') }).toEqual({ r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rdx, rax, rsp });
    // rbx and rbp are loaded twice (the way home, the fpstate pointer): the last load is the register's own.
    const last = (reg: string) => insns.filter((i) => new RegExp(`^mov 0x[0-9a-f]+\\(%rsp\\),%${reg}$`).test(i.text)).pop()!.text;
    expect(last('rbx')).toBe(`mov ${hex(rbx)}(%rsp),%rbx`);
    expect(last('rbp')).toBe(`mov ${hex(rbp)}(%rsp),%rbp`);
    expect(load('rcx')!.text).toBe(`mov ${hex(rip)}(%rsp),%rcx`); // rcx carries rip onto the syscall
    expect(rcx).toBeGreaterThan(0); // rcx itself is the syscall's to overwrite
    expect(insns.find((i) => /^push /.test(i.text))!.text).toBe(`push ${hex(efl)}(%rsp)`);
    expect(insns.find((i) => /,%rbp$/.test(i.text) && /^mov /.test(i.text))!.text).toBe(`mov ${hex(fpregs)}(%rsp),%rbp`);
    expect(insns.find((i) => /^lea /.test(i.text) && /,%rsi$/.test(i.text))!.text).toBe(`lea ${hex(sigmask)}(%rsp),%rsi`);
    expect(insns.find((i) => /\(%rbp\),%eax$/.test(i.text))!.text).toBe(`mov ${hex(xfeatures)}(%rbp),%eax`);
    expect(insns.find((i) => /\(%rbp\),%edx$/.test(i.text))!.text).toBe(`mov ${hex(xfeatures + 4)}(%rbp),%edx`);
    // The result slot and the way-home byte below the ucontext.
    expect(at(3)!.text).toBe('mov %rax,(%rsp)');
    expect(at(7)!.text).toBe('movzbl 0x8(%rsp),%ebx');
  });
});
