// A patch's hooks (HOTLOAD_ON_APPLY / HOTLOAD_ON_REVERT) run in the target on a
// borrowed thread, like dlopen. A non-zero return aborts the apply or revert
// with the hook's message (hotload_hook_message), and nothing changes.

import { HotloadError } from '@hotload/errors';
import { PatchMeta } from '@hotload/patch';
import { Session } from './session';
import { TargetRuntime, callOnHost, stopAndChooseHost } from './call-in-target';

export interface HookOptions {
  safePointTimeoutMs?: number;
  callTimeoutMs?: number;
}

/**
 * Run the hook whose function-pointer variable is at link-time `slot` of the
 * patch loaded at `patchBias`. `host` is a stopped thread to borrow, or 0 to
 * pick one. Returns the host, stopped; the other threads run.
 */
export function runHook(s: Session, rt: TargetRuntime, host: number, meta: PatchMeta, patchBias: bigint, slot: number, which: 'on-apply' | 'on-revert', opts: HookOptions): number {
  const tid = host || stopAndChooseHost(s, rt, opts.safePointTimeoutMs ?? 3000).tid;
  const fn = s.readU64(patchBias + BigInt(slot));
  const ret = BigInt.asIntN(32, callOnHost(s, rt, tid, fn, Buffer.alloc(0), [], opts.callTimeoutMs ?? 10000).value);
  if (ret !== 0n) {
    let message = '';
    if (meta.hookMessageSlot !== undefined) {
      const ptr = s.readU64(patchBias + BigInt(meta.hookMessageSlot));
      if (ptr) message = s.readString(ptr, 1024);
    }
    throw new HotloadError('HOOK_FAILED', `the ${which} hook of ${meta.file} returned ${ret}${message ? `: ${message}` : ''}; nothing was changed`);
  }
  return tid;
}
