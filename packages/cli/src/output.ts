// How commands talk to people and scripts: colour only on a terminal and never
// with NO_COLOR; --json prints one JSON document on stdout and nothing else there;
// progress goes to stderr and only on a terminal.

import type { HotloadError } from '@hotload/errors';

export interface Out {
  json: boolean;
  color: boolean;
  /** A line of human output on stdout (suppressed in --json mode). */
  line(s?: string): void;
  /** The JSON document of a --json run. */
  doc(v: unknown): void;
  /** Transient progress on stderr (terminal only). */
  progress(s: string): void;
  bold(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  dim(s: string): string;
}

export function makeOut(json: boolean, stream: NodeJS.WriteStream = process.stdout): Out {
  const color = !!stream.isTTY && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
  const wrap = (code: number) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
  const errTty = !!process.stderr.isTTY && process.env.TERM !== 'dumb';
  // A progress line on stderr is cleared before any result is written, so a
  // terminal never shows `redirecting functionspatched process ...`.
  let progressShown = false;
  const clearProgress = () => {
    if (!progressShown) return;
    process.stderr.write('\r\x1b[K');
    progressShown = false;
  };
  return {
    json,
    color,
    line: (s = '') => {
      clearProgress();
      if (!json) stream.write(s + '\n');
    },
    doc: (v) => {
      clearProgress();
      stream.write(JSON.stringify(v, null, 2) + '\n');
    },
    progress: (s) => {
      if (!errTty || json) return;
      process.stderr.write(`\r\x1b[K${s}`);
      progressShown = s !== '';
    },
    bold: wrap(1),
    red: wrap(31),
    green: wrap(32),
    yellow: wrap(33),
    dim: wrap(2),
  };
}

export function hex(n: number | bigint): string {
  return '0x' + n.toString(16);
}

/** Pad cells into aligned columns. */
export function table(rows: string[][]): string[] {
  const widths: number[] = [];
  const plain = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, plain(c).length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat(widths[i] - plain(c).length))).join('  '));
}

let interruptHandler: ((sig: NodeJS.Signals) => void) | undefined;
let lastWords: (() => string) | undefined;

/**
 * A long-running command takes Ctrl-C/SIGTERM itself (to finish cleanly)
 * instead of exiting at once. A second one exits at once, after printing
 * `last()` (what is left undone) on stderr.
 */
export function onInterrupt(fn: (sig: NodeJS.Signals) => void, last?: () => string): void {
  interruptHandler = fn;
  lastWords = last;
}

/** Called by the entry point on SIGINT/SIGTERM: true when a command took it. */
export function takeInterrupt(sig: NodeJS.Signals): boolean {
  if (!interruptHandler) {
    const words = lastWords?.();
    if (words) process.stderr.write(words.endsWith('\n') ? words : words + '\n');
    return false;
  }
  const fn = interruptHandler;
  interruptHandler = undefined; // a second Ctrl-C exits at once
  fn(sig);
  return true;
}

/**
 * An error in words: its code and message, each detail, its hint. A detail
 * that only repeats the message (a check with one problem makes the problem
 * its message too) is left out; --json keeps every detail.
 */
export function errorLines(err: Pick<HotloadError, 'code' | 'message' | 'details' | 'hint'>, indent = ''): { head: string; rest: string[] } {
  const details = err.details.filter((d) => d !== err.message);
  return { head: `${err.code}: ${err.message}`, rest: [...details.map((d) => `${indent}  - ${d}`), `${indent}hint: ${err.hint}`] };
}
