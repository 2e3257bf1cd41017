// validatePlan: what a plan file (and, from a script, a plan object) may hold.
// The rollout itself runs on real processes in tests/api-rollout.test.ts.
import { validatePlan } from './rollout';

const problems = (raw: unknown): string[] => {
  try {
    validatePlan(raw);
    return [];
  } catch (e) {
    return (e as { details: string[] }).details;
  }
};

test('a check, a step\'s or the plan\'s, is a command or a function', () => {
  expect(problems({ targets: { name: 'server' }, steps: [{ apply: 'fix.so' }, { check: 'true' }, { check: (pid: number) => pid > 0 }], healthCheck: async () => false })).toEqual([]);
  expect(problems({ targets: { name: 'server' }, steps: [{ check: '' }, { check: 3 }], healthCheck: {} })).toEqual([
    '"healthCheck" must be a shell command (a non-empty string) or, from a script, a function',
    'steps[0].check must be a shell command (a non-empty string) or, from a script, a function',
    'steps[1].check must be a shell command (a non-empty string) or, from a script, a function',
  ]);
});

test('a misspelt step or field is refused, every problem listed', () => {
  expect(problems({ targets: { pids: [1] }, steps: [{ aply: 'fix.so' }, { apply: 'a.so', wait: 1 }], healthcheck: 'true' })).toEqual([
    'unknown field "healthcheck" (known: targets, canary, parallel, steps, healthCheck, checkTimeoutMs)',
    'steps[0]: unknown step "aply" (apply, revert, wait, check)',
    'steps[1] must be one of {"apply": file}, {"revert": file}, {"wait": ms}, {"check": command}',
  ]);
});
