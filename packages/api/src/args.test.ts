// The API's argument checks, without a process: a bad argument is a
// HotloadError (USAGE) naming the function and the argument, thrown by a
// synchronous function and a rejection of an asynchronous one; a good one
// goes through to the operation (whose own error then shows it got there).
import { isHotloadError } from '@hotload/errors';
import * as api from './index';

// Scripts in JavaScript can pass anything.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Untyped = (...a: any[]) => unknown;
const call = (name: keyof typeof api, ...args: unknown[]) => (api[name] as unknown as Untyped)(...args);

/** What the call throws, or its promise rejects with; `sync` says which it was. */
async function outcome(name: keyof typeof api, ...args: unknown[]): Promise<{ error: unknown; sync: boolean }> {
  let ret: unknown;
  try {
    ret = call(name, ...args);
  } catch (e) {
    return { error: e, sync: true };
  }
  try {
    await ret;
  } catch (e) {
    return { error: e, sync: false };
  }
  return { error: undefined, sync: false };
}

const usage = (message: string | RegExp) => expect.objectContaining({ code: 'USAGE', message: typeof message === 'string' ? message : expect.stringMatching(message) });

test.each([
  ['attach', ['1234', 'p.so'], /^attach\(\): pid must be a process id .* \(got the string "1234"\)$/],
  ['attach', [1.5, 'p.so'], /pid must be a process id .* \(got the number 1.5\)$/],
  ['attach', [1, ''], 'attach(): patchFile must be a non-empty string (got the string "")'],
  ['attach', [1], 'attach(): patchFile is required'],
  ['checkAttach', [1, 'p.so', { allowUnsafeFile: 'yes' }], 'checkAttach(): opts.allowUnsafeFile must be true or false (got the string "yes")'],
  ['revert', [1, 'p.so', { all: 1 }], 'revert(): opts.all must be true or false (got the number 1)'],
  ['revert', [1, undefined, {}], 'revert(): name a patch to revert, or pass { all: true }'],
  ['status', [4194305], /^status\(\): pid must be a process id/],
  ['status', [], 'status(): pid is required'],
  ['status', [1, 'p.so'], 'status(): takes at most 1 argument (pid); got 2'],
  ['ps', [1], 'ps(): takes no arguments; got 1'],
  ['resolveTargets', [{}], 'resolveTargets(): spec must be a pid, pids separated by commas, or a process name (got an object)'],
  ['parsePid', [12], 'parsePid(): text must be a string (got the number 12)'],
  ['pidsByName', [''], 'pidsByName(): name must be a non-empty string (got the string "")'],
  ['pidsByBuildId', ['xyz'], 'pidsByBuildId(): buildId must be a build-id in hex (got the string "xyz")'],
  ['mkpatch', [{ sources: 'fix.c', target: 't', out: 'o.so' }], 'mkpatch(): opts.sources must be a non-empty array of non-empty strings (got the string "fix.c")'],
  ['mkpatch', [], 'mkpatch(): opts must be an object (got undefined)'],
  ['findProgram', [null], 'findProgram(): build must be a non-empty string (got null)'],
  ['diffBuilds', ['a'], 'diffBuilds(): newPath is required'],
  ['loadPlan', [3], 'loadPlan(): file must be a non-empty string (got the number 3)'],
])('%s(%j) throws USAGE', async (name, args, message) => {
  const r = await outcome(name as keyof typeof api, ...(args as unknown[]));
  expect(r.sync).toBe(true);
  expect(isHotloadError(r.error)).toBe(true);
  expect(r.error).toEqual(usage(message as string | RegExp));
});

test.each([
  ['rollout', [{ targets: { pids: [1] }, steps: [{ wait: 1 }] }, { signal: {} }], 'rollout(): opts.signal must be an AbortSignal (got an object)'],
  ['rollout', [], 'rollout(): plan is required'],
  ['mkpatchFromBuilds', [{ from: 'a', to: 'b', target: 't' }], 'mkpatchFromBuilds(): opts.out is required'],
  ['watch', [{ pids: ['1'] }], 'watch(): opts.pids must be a non-empty array of process ids (whole numbers) (got an array of 1)'],
])('async %s(%j) rejects with USAGE, never throws', async (name, args, message) => {
  const r = await outcome(name as keyof typeof api, ...(args as unknown[]));
  expect(r.sync).toBe(false);
  expect(r.error).toEqual(usage(message));
});

test('every problem at once, in details', async () => {
  const r = await outcome('watch', { pids: [], intervalMs: 0, folow: true });
  expect(r.error).toMatchObject({
    code: 'USAGE',
    message: expect.stringMatching(/^watch\(\): 3 problems with the arguments: /),
    details: [
      expect.stringMatching(/^watch\(\): opts has an unknown option "folow" \(known: pids, build, .*\)$/),
      'watch(): opts.pids must be a non-empty array of process ids (whole numbers) (got an array of 0)',
      'watch(): opts.intervalMs must be a whole number (1 or more) (got the number 0)',
    ],
  });
});

test('a plan is checked by validatePlan, as the CLI checks a plan file (PLAN_INVALID)', async () => {
  const r = await outcome('planTargets', { targets: { pids: ['12'] }, steps: [] });
  expect(r.error).toMatchObject({ code: 'PLAN_INVALID', details: ['"targets.pids" must be a non-empty array of process ids', '"steps" must be a non-empty array'] });
});

test('good arguments, with options left undefined as the CLI leaves them, reach the operation', async () => {
  // The operation's own error shows the call got past the checks.
  expect((await outcome('status', 4194304)).error).toMatchObject({ code: 'PID_NOT_FOUND' });
  expect((await outcome('mkpatch', { sources: ['/nonexistent/fix.c'], target: '/nonexistent/t', out: '/tmp/x.so', cc: undefined, cflags: undefined })).error).toMatchObject({ code: expect.not.stringMatching(/^USAGE$/) });
  expect(api.parsePid('22710')).toBe(22710);
  expect(api.validatePlan({ targets: { pids: [1] }, steps: [{ check: () => true }], healthCheck: async () => undefined })).toBeDefined();
});
