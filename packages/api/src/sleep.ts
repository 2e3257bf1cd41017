// Waiting in the long-running jobs (rollout, watch) without holding up Ctrl-C.

/**
 * Wait `ms`, or less when `signal` is aborted or when the function handed to
 * `onWake` is called; no timer or listener is left behind.
 */
export function sleep(ms: number, signal?: AbortSignal, onWake?: (wake: () => void) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    onWake?.(done);
  });
}
