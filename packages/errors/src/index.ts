// Every error hotload reports, in one table: code, exit status, message and hint
// live side by side so they cannot drift apart (libpulp's separate message list
// did). A HotloadError is thrown anywhere; only the CLI entry point turns it into
// output and an exit status.

export interface ErrorSpec {
  /** Exit status of the CLI when this error ends a command. */
  exit: number;
  /** One-line summary; details go in the error's message. */
  title: string;
  /** What the user should do next. */
  hint: string;
}

/** Exit statuses, documented in README.md ("Exit codes"). */
export const EXIT = {
  ok: 0,
  internal: 1,
  usage: 2,
  elf: 3,
  unpatchable: 4,
  process: 5,
  patch: 6,
  timeout: 7,
  build: 8,
  noChange: 9,
  alreadyApplied: 10,
  partial: 11,
  rolloutFailed: 12,
  /** Ctrl-C (SIGINT); SIGTERM ends a command with 143. */
  interrupted: 130,
} as const;

export const ERRORS = {
  USAGE: { exit: EXIT.usage, title: 'invalid command line', hint: 'Run `hotload <command> --help` for the arguments it takes.' },
  FILE_NOT_FOUND: { exit: EXIT.elf, title: 'file not found', hint: 'Check the path; it is resolved from the current directory.' },
  FILE_UNREADABLE: { exit: EXIT.elf, title: 'file cannot be read', hint: 'Check the file permissions.' },
  ELF_NOT_ELF: { exit: EXIT.elf, title: 'not an ELF file', hint: 'Give the compiled program or shared library, not a script or source file.' },
  ELF_UNSUPPORTED: { exit: EXIT.elf, title: 'unsupported ELF file', hint: 'hotload handles 64-bit little-endian x86-64 ELF files only.' },
  ELF_MALFORMED: { exit: EXIT.elf, title: 'malformed ELF file', hint: 'The file is truncated or corrupt; rebuild it.' },
  ELF_NO_PADS: { exit: EXIT.unpatchable, title: 'no patchable function entries', hint: 'Build with `-fpatchable-function-entry=16,14` (see `hotload flags`).' },
  UNPATCHABLE: { exit: EXIT.unpatchable, title: 'functions cannot be patched', hint: 'Rebuild the listed objects with `-fpatchable-function-entry=16,14`; do not edit pads by hand.' },
  PID_NOT_FOUND: { exit: EXIT.process, title: 'no such process', hint: 'Check the pid with `ps`; the process may have exited.' },
  PTRACE_DENIED: { exit: EXIT.process, title: 'not allowed to trace the process', hint: 'Run hotload as the user that owns the process (or root); check /proc/sys/kernel/yama/ptrace_scope (0 or 1 allows it) and that no debugger is already attached.' },
  PTRACE_FAILED: { exit: EXIT.process, title: 'ptrace operation failed', hint: 'The process may have exited or changed while hotload worked; it was left running. Retry.' },
  PROCESS_STOPPED: { exit: EXIT.process, title: 'the process is stopped', hint: 'It was stopped by a signal (Ctrl-Z, SIGSTOP); hotload would have to let it run. Continue it (`kill -CONT <pid>`, or `fg`) and retry.' },
  PROCESS_NO_PADS: { exit: EXIT.unpatchable, title: 'the process has no patchable module', hint: 'Rebuild the program with `-fpatchable-function-entry=16,14` and restart it once.' },
  PATCH_BAD: { exit: EXIT.patch, title: 'not a usable patch', hint: 'Build patches with `hotload mkpatch patch.c --target <elf> -o patch.so`.' },
  PATCH_UNSAFE_FILE: { exit: EXIT.patch, title: 'patch file could be changed by another user', hint: 'Make the file and its directory writable by you only (chmod go-w), or pass --allow-unsafe-file.' },
  PATCH_BUILD_MISMATCH: { exit: EXIT.patch, title: 'patch was built for another build', hint: 'Rebuild the patch with `hotload mkpatch --target` naming the exact file the process runs.' },
  PATCH_TARGET_NOT_MAPPED: { exit: EXIT.patch, title: 'patch target is not loaded in the process', hint: 'Check that the process runs the program or library the patch was built for.' },
  PATCH_UNRESOLVED: { exit: EXIT.patch, title: 'symbols of the patch do not resolve', hint: 'Each name must exist in the target (a static needs `HOTLOAD_STATIC`); rebuild the patch against this build.' },
  PATCH_DLOPEN_FAILED: { exit: EXIT.patch, title: 'the process could not load the patch', hint: 'The message is dlerror() from the process; fix the cause (missing library, undefined symbol) and rebuild the patch.' },
  PATCH_ALREADY_APPLIED: { exit: EXIT.alreadyApplied, title: 'patch already applied', hint: 'Nothing to do; `hotload status <pid>` shows what is applied.' },
  PATCH_NOT_APPLIED: { exit: EXIT.patch, title: 'patch not applied', hint: '`hotload status <pid>` lists the patches in force.' },
  PATCH_NO_STAGING: { exit: EXIT.patch, title: 'no directory for the patch in the process\'s view', hint: 'hotload writes the patch into /tmp, /dev/shm or /var/tmp as the process sees them (its mount namespace, its chroot); none can take it, so nothing was loaded or changed. Give the process a writable /tmp (a tmpfs), or run hotload as a user allowed to write there.' },
  HOOK_FAILED: { exit: EXIT.patch, title: 'a hook of the patch failed', hint: 'The patch was not applied (or not reverted); the hook says why. Fix the state it checks, or the hook, and retry.' },
  HEALTH_CHECK_FAILED: { exit: EXIT.rolloutFailed, title: 'a health check of the rollout failed', hint: 'What the rollout applied to that process was reverted. Look at what the check printed; fix the patch (or the check) and roll out again.' },
  PROCESS_BUSY: { exit: EXIT.process, title: 'another hotload is working on the process', hint: 'Wait for it to finish and retry.' },
  PLAN_INVALID: { exit: EXIT.usage, title: 'invalid rollout plan', hint: 'Fix the listed fields; `hotload rollout --help` shows the plan format.' },
  ROLLOUT_PARTIAL: { exit: EXIT.partial, title: 'rollout partly failed', hint: 'The failed processes were reverted; the others run the patch. See the results per process.' },
  INTERRUPTED: { exit: EXIT.interrupted, title: 'interrupted', hint: 'What the command had applied was reverted; see the results per process.' },
  CALLBACK_FAILED: { exit: EXIT.rolloutFailed, title: 'a callback of the script threw', hint: 'The rollout stopped and reverted what it had applied; the message is what the callback threw. Catch errors inside the callback.' },
  ROLLOUT_FAILED: { exit: EXIT.rolloutFailed, title: 'rollout failed', hint: 'Nothing is left applied by this rollout; see the results per process.' },
  NO_SAFE_POINT: { exit: EXIT.timeout, title: 'no safe moment to load the patch', hint: 'Every thread stayed where it may not be borrowed (inside the allocator, the loader, dlopen or fork; blocked in a system call that is not a wait; or on a stack that cannot be unwound) past the deadline; the details say which. Retry, or raise --timeout; a thread blocked for good (a write to a full pipe nobody reads) needs unblocking first.' },
  FUNCTIONS_ACTIVE: { exit: EXIT.timeout, title: 'replaced functions kept running', hint: 'A function that never returns (a main loop) is never inactive: attach without --wait-inactive (its running call keeps the old code; the next call takes the new), or restart the process. Otherwise retry, or give --wait-inactive more seconds.' },
  CALL_TIMEOUT: { exit: EXIT.timeout, title: 'call in the process did not return in time', hint: 'The thread resumes its own code by itself when the call returns; check `hotload status` and retry.' },
  HOST_STACK_FULL: { exit: EXIT.process, title: 'no room on the thread\'s stack for the call', hint: 'Nothing was written and the process runs on. The thread runs on a small stack (a coroutine or a small pthread stack); retry when another thread is idle, or give the process a thread with a normal stack.' },
  REGISTERS_NOT_RESTORED: { exit: EXIT.process, title: 'the borrowed thread\'s registers could not be put back', hint: 'The thread may compute wrong results from now on: restart the process. Report this as a hotload bug with `hotload --version`, the CPU (`grep -m1 flags /proc/cpuinfo`) and the kernel (`uname -r`).' },
  REBUILD_UNSUPPORTED: { exit: EXIT.unpatchable, title: 'the rebuilt code cannot be made into a patch', hint: 'Build with `hotload flags --diff` (-ffunction-sections -fdata-sections, PIE); the details name each symbol.' },
  NO_CHANGE: { exit: EXIT.noChange, title: 'nothing to patch', hint: 'The two builds run the same code; edit a function and rebuild.' },
  PATCH_NO_ROOM: { exit: EXIT.patch, title: 'no room for the patch near the program', hint: 'A rebuilt patch must lie within 2 GiB of the code it calls; the address space around the program is full. Restart the process.' },
  COMPILE_FAILED: { exit: EXIT.build, title: 'compiler failed', hint: 'Fix the compiler errors shown above and run again.' },
  SHIM_MISSING: { exit: EXIT.internal, title: 'native shim not available', hint: 'In a checkout, run `make`. Installed with npm, hotload builds its shim with the system C compiler when the prebuilt one does not load: install gcc (apt-get install gcc), or set HOTLOAD_SHIM to a built libhotload-shim.so.' },
  INTERNAL: { exit: EXIT.internal, title: 'internal error', hint: 'This is a hotload bug; please report it with the command line used.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/**
 * The mark of a HotloadError, under a key every copy of this module shares
 * (Symbol.for): a script and a tool may each install hotload, and each copy
 * has its own HotloadError class, which `instanceof` alone tells apart.
 */
const BRAND = Symbol.for('hotload.HotloadError');

/** The one error type hotload throws on purpose. */
export class HotloadError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  readonly exitCode: number;
  /** Every problem when there are several (a check reports all, not the first). */
  readonly details: string[];

  constructor(code: ErrorCode, message: string, opts: { hint?: string; details?: string[] } = {}) {
    super(message);
    this.name = 'HotloadError';
    this.code = code;
    this.hint = opts.hint ?? ERRORS[code].hint;
    this.exitCode = ERRORS[code].exit;
    this.details = opts.details ?? [];
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** `e instanceof HotloadError` holds for an error of any copy of hotload. */
  static override [Symbol.hasInstance](e: unknown): boolean {
    return isHotloadError(e);
  }

  toJSON(): { code: ErrorCode; message: string; hint: string; details: string[] } {
    return { code: this.code, message: this.message, hint: this.hint, details: this.details };
  }
}

/** A HotloadError of this or any other copy of hotload: checked by its brand, not by its class. */
export function isHotloadError(e: unknown): e is HotloadError {
  return typeof e === 'object' && e !== null && (e as { [BRAND]?: unknown })[BRAND] === true && typeof (e as { code?: unknown }).code === 'string';
}
