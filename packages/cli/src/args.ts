// Values of arguments and options, checked where yargs reads them: a bad one is
// a usage error (exit 2) that names it, before anything is done. yargs alone
// turns `--timeout abc` into NaN and `--timeout -5` into -5, and both went
// through (the attach applied its patch).
import { HotloadError, parsePid } from '@hotload/api';

const shown = (v: unknown) => {
  const s = String(v);
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}...` : s);
};

/** A process id given as a number. */
export function pidArg(v: unknown): number {
  return parsePid(String(v));
}

/** A coerce function for a whole-number option (milliseconds, counts) of at least `min`. */
export function wholeNumber(option: string, min: number): (v: unknown) => number | undefined {
  return (v) => {
    if (v === undefined) return undefined;
    const s = String(v);
    if (!/^\d+$/.test(s) || !Number.isSafeInteger(Number(s)) || Number(s) < min) {
      throw new HotloadError('USAGE', `${option} takes a whole number${min > 0 ? ` of at least ${min}` : ''}, not ${shown(v)}`);
    }
    return Number(s);
  };
}
