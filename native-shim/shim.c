/*
 * hotload's native shim: the few coarse ptrace and memory operations the
 * injector needs, so that no loop crosses the FFI boundary per machine word.
 * Loaded by packages/injector/src/native.ts only. Every function returns 0 (or
 * a count) on success and a negative errno on failure; results that do not fit
 * the return value go to hl_out[] or the data buffer (hl_data()).
 *
 * One session at a time: the shim tracks the threads of one process. All
 * ptrace requests must come from the OS thread that attached (the kernel ties
 * a tracee to that thread), so JavaScript calls these synchronously from the
 * main thread only.
 *
 * Facts relied on (see ../shared/INJECTION-NOTES.md and docs/ARCHITECTURE.md):
 * - PTRACE_SEIZE + PTRACE_INTERRUPT stop a thread without sending it a signal;
 *   the stop is PTRACE_EVENT_STOP. A thread blocked in a restartable syscall
 *   shows orig_rax = nr and rax = -ERESTART*; the kernel restarts it on resume.
 * - epoll_wait (and a few others) return -EINTR instead: we rewind such a
 *   thread onto its `syscall` instruction so the program never sees EINTR.
 * - A call borrowed on a thread returns through the call stub's way home, on
 *   a frame we build from its saved state (hl_call): rt_sigreturn, or, for a
 *   thread resuming a syscall, its own code, which keeps the restart block.
 *   So it goes home by itself, wait and all, even if hotload dies mid-call:
 *   the kernel detaches tracees of a dead tracer.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif
#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif
#ifndef PTRACE_GETSIGMASK
#define PTRACE_GETSIGMASK 0x420a
#endif

#define MAX_THREADS 4096
#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ERESTART_RESTARTBLOCK 516
#define NR_rt_sigreturn 15
#define NR_restart_syscall 219

struct thread {
  pid_t tid;
  int stopped;     /* in a ptrace stop we caused or saw */
  int pending_sig; /* signal seen at a signal-delivery stop, to pass on at resume */
  int gone;        /* exited while traced */
  uint64_t stop_ns; /* when we saw it stop (for the per-thread figures) */
};

static pid_t g_pid;
static struct thread g_threads[MAX_THREADS];
static int g_nthreads;
static int g_memfd = -1;
static uint64_t g_stop_began_ns;
static uint64_t g_stopped_ns; /* total time every thread was stopped (all sessions of this attach) */
static uint64_t g_max_stop_ns;
static uint64_t g_thr_sum_ns; /* per thread, from its stop to its resume, added over threads and stops */
static uint64_t g_thr_max_ns; /* the longest of those single stops */

uint64_t hl_out[64];
static uint8_t *g_data;
static size_t g_data_cap;

static int g_debug = -1;
#define DBG(...) do { if (g_debug < 0) g_debug = getenv("HOTLOAD_SHIM_DEBUG") != NULL; \
  if (g_debug) { fprintf(stderr, "shim: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A thread seen stopped, or let go: what the per-thread figures count. */
static void mark_stopped(struct thread *t) {
  t->stopped = 1;
  t->stop_ns = now_ns();
}
static void mark_resumed(struct thread *t) {
  t->stopped = 0;
  if (!t->stop_ns) return;
  uint64_t d = now_ns() - t->stop_ns;
  g_thr_sum_ns += d;
  if (d > g_thr_max_ns) g_thr_max_ns = d;
  t->stop_ns = 0;
}

/* ---- results ------------------------------------------------------------------ */

int64_t hl_out_get(int i) { return (i >= 0 && i < 64) ? (int64_t)hl_out[i] : 0; }
void *hl_data(void) { return g_data; }

static int data_reserve(size_t n) {
  if (n <= g_data_cap) return 0;
  uint8_t *p = realloc(g_data, n);
  if (!p) return -ENOMEM;
  g_data = p;
  g_data_cap = n;
  return 0;
}

/* ---- threads -------------------------------------------------------------------- */

static struct thread *find_thread(pid_t tid) {
  for (int i = 0; i < g_nthreads; i++)
    if (g_threads[i].tid == tid) return &g_threads[i];
  return NULL;
}

/* If a thread stopped right after a syscall that returned -EINTR because we
 * interrupted it (epoll_wait does this), put it back on its `syscall`
 * instruction with the syscall number in rax, so it re-issues the call. */
static void undo_eintr(pid_t tid) {
  struct user_regs_struct r;
  if (ptrace(PTRACE_GETREGS, tid, 0, &r) != 0) return;
  if ((int64_t)r.orig_rax < 0 || (int64_t)r.rax != -EINTR) return;
  errno = 0;
  long w = ptrace(PTRACE_PEEKTEXT, tid, (void *)(r.rip - 2), 0);
  if (errno != 0 || (w & 0xffff) != 0x050f) return; /* 0f 05: syscall */
  r.rip -= 2;
  r.rax = r.orig_rax;
  ptrace(PTRACE_SETREGS, tid, 0, &r);
}

/* Wait until `t` is in a ptrace stop. A signal that arrives first is delivered
 * (a job-control one is kept, to pass on when the thread resumes). Returns 0, -ESRCH if gone, or
 * -ETIMEDOUT when it does not stop within 3 s (hotload must never hang on a
 * target: a thread wedged for good is left to the kernel, which detaches it
 * when hotload exits). */
static int step_stopped(struct thread *t);
static int wait_stopped(struct thread *t) {
  uint64_t deadline = now_ns() + 3000000000ull;
  for (;;) {
    int r = step_stopped(t);
    if (r != 0) return r < 0 ? r : 0;
    if (now_ns() > deadline) return -ETIMEDOUT;
    struct timespec ts = { 0, 20000 };
    nanosleep(&ts, NULL);
  }
}

/* One look at `t` (never blocks): 1 once it is in a ptrace stop (its stop
 * time taken now), 0 while it is not yet, <0 when it is gone. Each event on
 * the way is handled as wait_stopped says. */
static int step_stopped(struct thread *t) {
  for (;;) {
    int st;
    pid_t r = waitpid(t->tid, &st, __WALL | WNOHANG);
    if (r == 0) return 0;
    if (r < 0) {
      if (errno == EINTR) continue;
      t->gone = 1;
      return -errno;
    }
    if (WIFEXITED(st) || WIFSIGNALED(st)) {
      t->gone = 1;
      return -ESRCH;
    }
    if (!WIFSTOPPED(st)) continue;
    int event = st >> 16;
    int sig = WSTOPSIG(st);
    DBG("wait_stopped %d: event %d sig %d", t->tid, event, sig);
    if (event == PTRACE_EVENT_STOP) {
      mark_stopped(t);
      undo_eintr(t->tid);
      return 1;
    }
    if (event == 0 && sig != (SIGTRAP | 0x80)) {
      if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
        /* A job-control stop: passed on only when hotload lets the thread go. */
        t->pending_sig = sig;
        mark_stopped(t);
        return 1;
      }
      /* A signal arrived before our interrupt took effect, and the interrupt
       * stays pending. Deliver the signal now (the handler's frame is set up)
       * and wait for the interrupt, which stops the thread at the handler's
       * first instruction. Keeping the signal back instead left the interrupt
       * pending past our resume: the thread stopped again at once, each look
       * reaped the last look's stop and asked for the next, and a thread
       * taking a timer signal never ran again while hotload looked (the
       * sigmalloc stress test: NO_SAFE_POINT). */
      ptrace(PTRACE_CONT, t->tid, 0, (void *)(long)sig);
      continue;
    }
    /* Anything else (a syscall stop, left from a call that ran under
     * PTRACE_SYSCALL): keep it going and ask again. The interrupt that caused
     * this stop is spent; without a new one a thread that goes back to sleep
     * in the same syscall would never stop. */
    ptrace(PTRACE_CONT, t->tid, 0, 0);
    ptrace(PTRACE_INTERRUPT, t->tid, 0, 0);
  }
}

/* Seize every thread not yet known, and with `stop`, interrupt every thread
 * not stopped and wait for each to stop. Returns how many threads were new
 * (or, with `stop`, new or restopped). */
static int seize_new(int stop) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", g_pid);
  DIR *d = opendir(path);
  if (!d) return -errno;
  int added = 0, err = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    pid_t tid = (pid_t)atoi(e->d_name);
    struct thread *t = find_thread(tid);
    if (t && !t->gone) {
      if (stop && !t->stopped && ptrace(PTRACE_INTERRUPT, tid, 0, 0) == 0) added++; /* resumed earlier: stop it again */
      continue;
    }
    if (g_nthreads >= MAX_THREADS) { err = -E2BIG; break; }
    if (ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)PTRACE_O_TRACESYSGOOD) != 0) {
      if (errno == ESRCH) continue; /* exited meanwhile */
      err = -errno;
      break;
    }
    if (stop && ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0 && errno != ESRCH) { err = -errno; }
    g_threads[g_nthreads++] = (struct thread){ .tid = tid };
    added++;
  }
  closedir(d);
  if (err || !stop) return err ? err : added;
  /* Every thread looked at in turn until all are stopped, so that each one's
   * stop is seen (and its stop time taken) when it happens, not after the
   * threads before it in the table have stopped too. A thread that will not
   * stop: report it; nothing may be written while it runs. */
  uint64_t tw = now_ns(), deadline = tw + 3000000000ull;
  for (;;) {
    int waiting = 0;
    for (int i = 0; i < g_nthreads; i++) {
      struct thread *t = &g_threads[i];
      if (!t->gone && !t->stopped && step_stopped(t) == 0) waiting++;
    }
    if (!waiting) break;
    if (now_ns() > deadline) return -ETIMEDOUT;
    struct timespec ts = { 0, 20000 };
    nanosleep(&ts, NULL);
  }
  DBG("seize_new: %d added, waited %.3f ms", added, (now_ns() - tw) / 1e6);
  return added;
}

/* Stop every thread of the process (seize any we do not trace yet), rescanning
 * /proc/PID/task until no new thread appears. Returns the number of live threads. */
int hl_stop_all(void) {
  if (!g_pid) return -EINVAL;
  g_stop_began_ns = now_ns();
  for (int round = 0; round < 100; round++) {
    int n = seize_new(1);
    if (n < 0) return n;
    if (n == 0) {
      int live = 0;
      for (int i = 0; i < g_nthreads; i++) live += !g_threads[i].gone;
      return live ? live : -ESRCH;
    }
  }
  return -EAGAIN;
}

static pid_t g_mem_pid;

/* Open /proc/PID/mem for reading and writing without stopping anything, so that
 * work that needs no stop (reading prologues, writing dead bytes) happens before
 * the threads are stopped. hl_detach closes it. */
int hl_open_mem(int pid) {
  if (g_memfd >= 0 && g_mem_pid == pid) return 0;
  if (g_memfd >= 0) close(g_memfd);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/mem", pid);
  g_memfd = open(path, O_RDWR | O_CLOEXEC);
  g_mem_pid = pid;
  return g_memfd >= 0 ? 0 : -errno;
}

/* Start a session on `pid` (or continue the one already on it). */
static int begin_session(int pid) {
  if (g_pid && g_pid != pid) return -EBUSY;
  if (kill(pid, 0) != 0) return -errno;
  if (!g_pid) {
    g_pid = pid;
    g_nthreads = 0;
    g_stopped_ns = 0;
    g_max_stop_ns = 0;
    g_thr_sum_ns = 0;
    g_thr_max_ns = 0;
  }
  return 0;
}

/* Leave nothing behind after a failed start: detach whatever was seized,
 * passing on any signal a thread was stopped with. */
static int abandon_session(int err) {
  for (int i = 0; i < g_nthreads; i++)
    if (!g_threads[i].gone) ptrace(PTRACE_DETACH, g_threads[i].tid, 0, (void *)(long)g_threads[i].pending_sig);
  g_nthreads = 0;
  g_pid = 0;
  return err;
}

/* Seize and stop every thread of `pid`. Returns the number of threads. */
int hl_attach(int pid) {
  if (g_pid) return -EBUSY;
  int r = begin_session(pid);
  if (r < 0) return r;
  r = hl_stop_all();
  if (r < 0) return abandon_session(r);
  hl_open_mem(pid);
  return r;
}

/* Seize every thread of `pid` without stopping any (rescanning until no new
 * thread appears); called again, seize only threads born since. Threads are
 * then stopped one at a time (hl_stop_thread) or all together (hl_stop_all).
 * Returns the number of threads. */
int hl_seize(int pid) {
  int r = begin_session(pid);
  if (r < 0) return r;
  for (int round = 0; round < 100; round++) {
    r = seize_new(0);
    if (r <= 0) break;
  }
  if (r < 0) return abandon_session(r);
  hl_open_mem(pid);
  return g_nthreads;
}

/* Stop one traced thread and wait until it is stopped. */
int hl_stop_thread(int tid) {
  struct thread *t = find_thread(tid);
  if (!t || t->gone) return -ESRCH;
  if (t->stopped) return 0;
  if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) return -errno;
  return wait_stopped(t);
}

/* Let one stopped thread run again (it stays traced). */
int hl_resume_thread(int tid) {
  struct thread *t = find_thread(tid);
  if (!t || t->gone || !t->stopped) return 0;
  if (ptrace(PTRACE_CONT, tid, 0, (void *)(long)t->pending_sig) != 0) return -errno;
  mark_resumed(t);
  t->pending_sig = 0;
  return 0;
}

static void account_stop(void) {
  if (!g_stop_began_ns) return;
  uint64_t d = now_ns() - g_stop_began_ns;
  g_stopped_ns += d;
  if (d > g_max_stop_ns) g_max_stop_ns = d;
  g_stop_began_ns = 0;
}

/* Let every stopped thread except `keep` run again; they stay traced. */
int hl_resume_all_except(int keep) {
  for (int i = 0; i < g_nthreads; i++) {
    struct thread *t = &g_threads[i];
    if (t->gone || !t->stopped || t->tid == keep) continue;
    if (ptrace(PTRACE_CONT, t->tid, 0, (void *)(long)t->pending_sig) == 0) {
      mark_resumed(t);
      t->pending_sig = 0;
    } else if (errno == ESRCH) {
      t->gone = 1;
    }
  }
  account_stop();
  return 0;
}

/* Detach every thread; each resumes where it was (restarting its syscall).
 * out[0] = ns from each all-threads stop's first interrupt to its last
 * resume, added over the stops (wall time: it includes threads waiting for a
 * CPU to take the interrupt); out[1] = the longest of those; out[2] = ns each
 * thread was stopped, from its stop to its resume, added over threads and
 * stops; out[3] = the longest single stop of one thread. */
int hl_detach(void) {
  int err = 0;
  for (int i = 0; i < g_nthreads; i++) {
    struct thread *t = &g_threads[i];
    if (t->gone) continue;
    if (!t->stopped) {
      /* Detach needs a stopped tracee: stop it first. */
      if (ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) == 0) wait_stopped(t);
      if (t->gone) continue;
    }
    if (ptrace(PTRACE_DETACH, t->tid, 0, (void *)(long)t->pending_sig) != 0 && errno != ESRCH) err = -errno;
    mark_resumed(t);
  }
  account_stop();
  hl_out[0] = g_stopped_ns;
  hl_out[1] = g_max_stop_ns;
  hl_out[2] = g_thr_sum_ns;
  hl_out[3] = g_thr_max_ns;
  if (g_memfd >= 0) close(g_memfd);
  g_memfd = -1;
  g_mem_pid = 0;
  g_nthreads = 0;
  g_pid = 0;
  return err;
}

/* ---- one hotload per process ------------------------------------------------------ */

/* Lock process `pid` for this hotload: flock on its /proc/PID directory, which
 * every user and every mount namespace of this pid namespace sees as one inode
 * (a lock file in a per-user or per-TMPDIR directory did not hold across
 * them). Returns the descriptor holding the lock, -EAGAIN when another holds
 * it, or -errno. Closing the descriptor (hl_unlock_process, or exiting)
 * releases it. */
int hl_lock_process(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d", pid);
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno == EWOULDBLOCK ? EAGAIN : errno;
    close(fd);
    return -e;
  }
  return fd;
}

int hl_unlock_process(int fd) {
  return close(fd) == 0 ? 0 : -errno;
}

/* An flock(2) on a directory (`exclusive`: LOCK_EX, else LOCK_SH), never
 * waiting: the descriptor holding it, -EAGAIN while another holds it in a
 * conflicting mode, or -errno. hl_unlock_process (or exiting) releases it.
 * Staging a patch copy holds a shared one on the staging directory until the
 * process has mapped it; cleaning old copies takes an exclusive one. */
int hl_lock_dir(const char *path, int exclusive) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
    int e = errno == EWOULDBLOCK ? EAGAIN : errno;
    close(fd);
    return -e;
  }
  return fd;
}

/* ---- memory ---------------------------------------------------------------------- */

/* Read len bytes at addr into the data buffer; returns bytes read. */
int hl_read(uint64_t addr, int len) {
  if (len < 0) return -EINVAL;
  int r = data_reserve((size_t)len);
  if (r) return r;
  if (g_memfd >= 0) {
    ssize_t n = pread(g_memfd, g_data, (size_t)len, (off_t)addr);
    if (n >= 0) return (int)n;
  }
  /* Fallback: word at a time through ptrace (needs a stopped thread). */
  pid_t tid = g_nthreads ? g_threads[0].tid : g_pid;
  for (int off = 0; off < len; off += 8) {
    errno = 0;
    long w = ptrace(PTRACE_PEEKDATA, tid, (void *)(addr + off), 0);
    if (errno) return off ? off : -errno;
    memcpy(g_data + off, &w, (size_t)(len - off < 8 ? len - off : 8));
  }
  return len;
}

/* Write bytes into the process, text included. /proc/PID/mem first; when the
 * kernel refuses that, PTRACE_POKEDATA a word at a time (read-modify-write at
 * the edges). Needs the threads stopped. */
int hl_write(uint64_t addr, const uint8_t *buf, int len) {
  if (len < 0) return -EINVAL;
  if (g_memfd >= 0) {
    ssize_t n = pwrite(g_memfd, buf, (size_t)len, (off_t)addr);
    if (n == len) return 0;
  }
  pid_t tid = g_nthreads ? g_threads[0].tid : g_pid;
  uint64_t start = addr & ~7ull, end = (addr + (uint64_t)len + 7) & ~7ull;
  for (uint64_t a = start; a < end; a += 8) {
    errno = 0;
    long w = ptrace(PTRACE_PEEKDATA, tid, (void *)a, 0);
    if (errno) return -errno;
    uint8_t *wb = (uint8_t *)&w;
    for (int i = 0; i < 8; i++) {
      uint64_t p = a + (uint64_t)i;
      if (p >= addr && p < addr + (uint64_t)len) wb[i] = buf[p - addr];
    }
    if (ptrace(PTRACE_POKEDATA, tid, (void *)a, (void *)w) != 0) return -errno;
  }
  return 0;
}

/* ---- the extended register state (XSAVE), sized from the CPU --------------------- */

/*
 * What NT_X86_XSTATE holds is the CPU's, never a constant: the standard-format
 * XSAVE area for every user state component the kernel enabled in XCR0, laid
 * out as CPUID leaf 0xD says (sub-leaf i: size in EAX, offset in EBX, ECX bit 2
 * set when the component is "dynamic": AMX tile data, which a task must ask
 * for with arch_prctl(ARCH_REQ_XCOMP_PERM) before it may use it). With
 * AVX-512 and AMX the area is about 11 KB; with AVX and PKRU 2440 bytes; a CPU
 * without XSAVE has only the 512-byte FXSAVE area (NT_PRFPREG).
 *
 * The kernel accepts a signal frame's XSAVE area only if it is no larger than
 * the task's own signal-frame size, which leaves out dynamic components the
 * task has no permission for; a larger one makes rt_sigreturn restore x87/SSE
 * only and zero the rest. So a frame carries the non-dynamic components, plus a
 * dynamic one only when the thread's XSTATE_BV shows it in use (a thread using
 * tiles has the permission).
 */
#define XS_LEGACY 512   /* FXSAVE area: x87, MXCSR, XMM0-15 */
#define XS_HEADER 64    /* XSTATE_BV, XCOMP_BV, reserved */
#define XS_SW 464       /* software-reserved bytes in the legacy area (struct _fpx_sw_bytes) */
#define XFEATURE_FP 0
#define XFEATURE_SSE 1

static struct {
  int ready;
  int xsave;            /* the CPU and kernel use XSAVE (OSXSAVE) */
  uint64_t xcr0;        /* user state components enabled */
  uint64_t dynamic;     /* of those, the ones a task must ask permission for */
  uint32_t full;        /* standard-format size for every component in XCR0 */
  uint32_t off[64], size[64];
} g_xs;

static void xs_layout(void) {
  if (g_xs.ready) return;
  g_xs.ready = 1;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) { /* no OSXSAVE */
    g_xs.full = XS_LEGACY;
    return;
  }
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  g_xs.xsave = 1;
  g_xs.xcr0 = ((uint64_t)hi << 32) | lo;
  __cpuid_count(0xd, 0, a, b, c, d);
  g_xs.full = b; /* size for the components enabled in XCR0 */
  for (int i = 2; i < 64; i++) {
    if (!(g_xs.xcr0 & (1ull << i))) continue;
    __cpuid_count(0xd, (unsigned)i, a, b, c, d);
    g_xs.size[i] = a;
    g_xs.off[i] = b;
    if (c & 4) g_xs.dynamic |= 1ull << i;
  }
}

/* The thread's extended state into a buffer of the kernel's size. Returns the
 * size, or -errno; *fx is set when only the FXSAVE area exists. */
static int xs_get(pid_t tid, uint8_t **buf, int *fx) {
  xs_layout();
  size_t cap = (g_xs.full > XS_LEGACY ? g_xs.full : XS_LEGACY) + 4096;
  for (;;) {
    uint8_t *p = realloc(*buf, cap);
    if (!p) return -ENOMEM;
    *buf = p;
    struct iovec iov = { p, cap };
    *fx = 0;
    if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_X86_XSTATE, &iov) != 0) {
      if (errno != ENODEV && errno != EINVAL) return -errno;
      /* No XSAVE: the FXSAVE area alone. */
      iov.iov_len = XS_LEGACY;
      if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_PRFPREG, &iov) != 0) return -errno;
      *fx = 1;
    }
    if (iov.iov_len < cap) return (int)iov.iov_len;
    cap *= 2; /* filled to the brim: it may have been cut short */
  }
}

static int xs_set(pid_t tid, uint8_t *buf, int len, int fx) {
  struct iovec iov = { buf, (size_t)len };
  return ptrace(PTRACE_SETREGSET, tid, (void *)(long)(fx ? NT_PRFPREG : NT_X86_XSTATE), &iov) == 0 ? 0 : -errno;
}

static uint64_t xs_bv(const uint8_t *x, int len) {
  uint64_t bv = (uint64_t)-1; /* an FXSAVE-only area: x87 and SSE always hold state */
  if (len >= XS_LEGACY + 8) memcpy(&bv, x + XS_LEGACY, 8);
  return bv;
}

/* The XSAVE area a signal frame carries for this thread: its size (standard
 * format, from offset 0) and the components in it. */
static uint32_t xs_frame(const uint8_t *x, int len, int fx, uint64_t *features) {
  if (fx || !g_xs.xsave) { *features = 3; return XS_LEGACY; }
  uint64_t in_use = xs_bv(x, len);
  uint64_t want = g_xs.xcr0 & ~(g_xs.dynamic & ~in_use);
  uint32_t size = XS_LEGACY + XS_HEADER;
  for (int i = 2; i < 64; i++)
    if ((want & (1ull << i)) && g_xs.off[i] + g_xs.size[i] > size) size = g_xs.off[i] + g_xs.size[i];
  if (size > (uint32_t)len) size = (uint32_t)len;
  *features = want;
  return size;
}

/* Do two saved states hold the same registers? Compared as the architecture
 * defines them, not as bytes: a component whose XSTATE_BV bit is clear is in
 * its initial configuration (zeros; x87's control word 0x37f), whatever its
 * bytes say, and a CPU may clear the bit of registers that merely hold initial
 * values. The header and the software-reserved bytes are not state. Returns 0
 * when equal, else 1 + the first differing component. */
static int xs_differs(const uint8_t *a, int alen, const uint8_t *b, int blen) {
  static const uint8_t zeros[1024];
  uint64_t abv = xs_bv(a, alen), bbv = xs_bv(b, blen);
  /* x87: FCW..FDP (0..23) and ST0-7 (32..159); init is FCW 0x37f, the rest 0. */
  uint8_t x87init[160] = { 0x7f, 0x03 };
  const uint8_t *ax = (abv & 1) ? a : x87init, *bx = (bbv & 1) ? b : x87init;
  if (memcmp(ax, bx, 24) != 0 || memcmp(ax + 32, bx + 32, 128) != 0) return 1 + XFEATURE_FP;
  /* MXCSR (24..27) is state whenever SSE or AVX is; compare it as saved. */
  if (memcmp(a + 24, b + 24, 4) != 0) return 1 + XFEATURE_SSE;
  /* XMM0-15 (160..415). */
  const uint8_t *as = (abv & 2) ? a + 160 : zeros, *bs = (bbv & 2) ? b + 160 : zeros;
  if (memcmp(as, bs, 256) != 0) return 1 + XFEATURE_SSE;
  for (int i = 2; i < 64; i++) {
    if (!(g_xs.xcr0 & (1ull << i))) continue;
    uint32_t o = g_xs.off[i], n = g_xs.size[i];
    int ain = o + n <= (uint32_t)alen, bin = o + n <= (uint32_t)blen;
    if (!ain && !bin) continue;
    if (ain != bin) return 1 + i;
    for (uint32_t k = 0; k < n; k += sizeof zeros) {
      uint32_t m = n - k < sizeof zeros ? n - k : (uint32_t)sizeof zeros;
      const uint8_t *pa = (abv & (1ull << i)) ? a + o + k : zeros, *pb = (bbv & (1ull << i)) ? b + o + k : zeros;
      if (memcmp(pa, pb, m) != 0) return 1 + i;
    }
  }
  return 0;
}

/* Room below a thread's stack pointer in its own stack mapping (bytes), or -errno. */
static int64_t stack_room(uint64_t rsp) {
  char path[64], line[512];
  snprintf(path, sizeof path, "/proc/%d/maps", g_pid);
  FILE *f = fopen(path, "re");
  if (!f) return -errno;
  int64_t room = -EFAULT;
  while (fgets(line, sizeof line, f)) {
    unsigned long long lo, hi;
    if (sscanf(line, "%llx-%llx", &lo, &hi) != 2) continue;
    if (rsp > lo && rsp <= hi) { room = (int64_t)(rsp - lo); break; }
  }
  fclose(f);
  return room;
}

/* ---- calling a function on a borrowed thread -------------------------------------- */

/* struct sigcontext (x86-64) and the kernel's rt_sigframe, as laid out by the
 * kernel (arch/x86/include/uapi/asm/sigcontext.h, asm/sigframe.h). */
struct k_sigcontext {
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags;
  uint16_t cs, gs, fs, ss;
  uint64_t err, trapno, oldmask, cr2, fpstate, reserved1[8];
};
struct k_stack { uint64_t ss_sp; int32_t ss_flags; int32_t pad; uint64_t ss_size; };
struct k_ucontext {
  uint64_t uc_flags, uc_link;
  struct k_stack uc_stack;
  struct k_sigcontext uc_mcontext;
  uint64_t uc_sigmask;
};
#define UC_FP_XSTATE 0x1
#define UC_SIGCONTEXT_SS 0x2
#define UC_STRICT_RESTORE_SS 0x4
#ifndef FP_XSTATE_MAGIC1
#define FP_XSTATE_MAGIC1 0x46505853u
#endif
#ifndef FP_XSTATE_MAGIC2
#define FP_XSTATE_MAGIC2 0x46505845u
#endif
#define FRAME_BYTES (8 + sizeof(struct k_ucontext) + 128) /* pretcode + uc + siginfo */

static int wait_any(pid_t *who, int *status) {
  /* Poll every traced thread without blocking on one: other threads may stop for
   * signals while the call runs and must be let go at once. */
  for (int i = 0; i < g_nthreads; i++) {
    struct thread *t = &g_threads[i];
    if (t->gone) continue;
    pid_t r = waitpid(t->tid, status, __WALL | WNOHANG);
    if (r == t->tid) { *who = r; return 1; }
    if (r < 0 && errno == ECHILD) t->gone = 1;
  }
  return 0;
}

/* Stack the called function may use below the frame, on a stack that cannot grow. */
#define CALL_HEADROOM (32 * 1024)

/* Registers equal in every way rt_sigreturn and the kernel keep: orig_rax is
 * always -1 after it, and of eflags only the flags the program can see count
 * (CF PF AF ZF SF TF DF OF AC; the kernel adjusts RF and others). */
static int regs_equal(const struct user_regs_struct *a, const struct user_regs_struct *b) {
  struct user_regs_struct x = *a, y = *b;
  x.orig_rax = y.orig_rax = 0;
  x.eflags &= 0x40dd5;
  y.eflags &= 0x40dd5;
  return memcmp(&x, &y, sizeof x) == 0;
}

/* Put a thread's registers, extended state and signal mask as given; returns a
 * mask of what could not be set (1 registers, 2 extended state, 4 mask). The
 * registers last: stopped at the entry of a system call of its way home, a
 * thread whose registers still say so finishes that way by itself if hotload
 * dies first, restoring the same state. */
static int put_state(pid_t tid, const struct user_regs_struct *r, uint8_t *x, int xlen, int fx, uint64_t mask) {
  int failed = 0;
  if (xs_set(tid, x, xlen, fx) != 0) failed |= 2;
  if (ptrace(PTRACE_SETSIGMASK, tid, (void *)sizeof mask, &mask) != 0) failed |= 4;
  if (ptrace(PTRACE_SETREGS, tid, 0, r) != 0) failed |= 1;
  return failed;
}

/* Which of the thread's registers, extended state and mask differ from the
 * given ones (mask as put_state's); hl_out[6] = 1 + the first differing XSAVE
 * component. A read that fails counts as a difference. */
static int state_differs(pid_t tid, const struct user_regs_struct *want, const uint8_t *x, int xlen, uint64_t mask, uint8_t **scratch) {
  int d = 0, fx2;
  struct user_regs_struct now;
  if (ptrace(PTRACE_GETREGS, tid, 0, &now) != 0 || !regs_equal(&now, want)) d |= 1;
  int n = xs_get(tid, scratch, &fx2);
  int c = n < 0 ? 1 : xs_differs(*scratch, n, x, xlen);
  if (c) { d |= 2; hl_out[6] = (uint64_t)c; }
  uint64_t m = 0;
  if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof m, &m) != 0 || m != mask) d |= 4;
  return d;
}

/*
 * Run fn(data_ptr, a1, a2) on stopped thread `tid` and wait for it to return.
 * `stub` is the address of CALL_STUB (packages/x86) in executable memory of the
 * target; `stub_sigreturn_end` and `stub_sigprocmask_end` are the addresses
 * just past its two ways home's first `syscall`. `data` (may be empty) is
 * copied onto the thread's stack, below the red zone; the first argument
 * points at it (or is 0 when data_len is 0).
 *
 * The thread's stack gets, from high to low: the red zone (untouched), data,
 * the saved extended state (XSAVE layout, sized as xs_frame says), an
 * rt_sigframe holding every general register, the signal mask and a pointer to
 * that state, the byte saying which way the stub goes home, and the slot for
 * the result. The stub calls fn, stores rax in the slot and goes home by
 * itself, so the thread returns to its own code even if hotload dies
 * mid-call. If the thread was inside a syscall, it resumes on the `syscall`
 * instruction so the call is re-issued. A stack without room for the frame and
 * the call is refused (-ENOSPC, hl_out[4] = room, hl_out[5] = needed) before
 * anything is written.
 *
 * The way home. A thread whose wait the kernel would resume through
 * restart_syscall (rax = -ERESTART_RESTARTBLOCK: nanosleep, clock_nanosleep,
 * poll, futex with a timeout; or restart_syscall itself, after an earlier
 * stop; or a thread an earlier call put back set to execute restart_syscall)
 * needs its per-thread restart block, which rt_sigreturn resets (restart_syscall
 * then fails with EINTR). So every thread that resumes on a `syscall`
 * instruction goes home through the stub's own code (ways 1 and 2: mask,
 * extended state, flags, registers, and a jump onto that `syscall`), which
 * leaves the restart block alone: the wait goes on to its original deadline
 * whether hotload lives or dies. Any other thread goes home by rt_sigreturn
 * on the frame (way 0), which restores everything at once. The call's own
 * code may replace the restart block (nanosleep and clock_nanosleep reset it
 * as they begin; an interrupted wait with a timeout takes it): seen at that
 * system call, the thread's own call, when known, is issued again instead
 * (frame rewritten; a relative timeout starts over). A thread found already in
 * restart_syscall has no known call: its wait then fails with EINTR.
 *
 * While hotload lives, it stops the thread at the entry of the first system
 * call of its way home (rt_sigreturn or rt_sigprocmask), reads the result,
 * and, for ways 1 and 2, skips that call and puts the thread back by ptrace
 * (extended state and mask first, registers last, so a hotload that dies in
 * between leaves a thread that finishes the way home by itself). With
 * HOTLOAD_SHIM_SELF_RETURN set (tests), it lets the stub finish ways 1 and 2
 * itself and stops the thread at the entry of its `syscall`, where the state
 * the stub put back is compared with the saved one (a difference counts in
 * hl_out[3]), and only then puts it back by ptrace (the `syscall` skipped).
 *
 * After the way home, the thread's state is compared with what it must be
 * (registers, extended state component by component, signal mask); what
 * differs is set again and compared again. hl_out[3] = what had to be set
 * again (1 registers, 2 extended state, 4 mask); if it still differs, -EIO
 * with hl_out[4] = what. Other threads keep running; their signal stops are
 * passed on here. hl_out[0] = result, hl_out[1] = syscall stops seen,
 * hl_out[2] = ns in call, hl_out[7] = the way home (0, 1 or 2). On -ETIMEDOUT
 * the thread is still in the call and will go home by itself.
 */
#define NR_rt_sigprocmask 14
#define NR_nanosleep 35
#define NR_clock_nanosleep 230
#define HOME_SIGRETURN 0
#define HOME_XRSTOR 1
#define HOME_FXRSTOR 2
int hl_call(int tid, uint64_t stub, uint64_t stub_sigreturn_end, uint64_t stub_sigprocmask_end, uint64_t fn, const uint8_t *data, int data_len,
            uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, int timeout_ms) {
  struct thread *t = find_thread(tid);
  if (!t || t->gone || !t->stopped) return -ESRCH;
  if (t->pending_sig) return -EAGAIN; /* deliver that first */
  for (int i = 3; i < 8; i++) hl_out[i] = 0;
  struct user_regs_struct regs, ctx;
  if (ptrace(PTRACE_GETREGS, tid, 0, &regs) != 0) return -errno;
  static uint8_t *xs, *x2;
  int fx;
  int xsize = xs_get(tid, &xs, &fx);
  if (xsize < 0) return xsize;
  uint64_t features;
  uint32_t fsize = xs_frame(xs, xsize, fx, &features);
  uint64_t sigmask = 0;
  if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof sigmask, &sigmask) != 0) return -errno;

  /* The state the thread must resume in: as interrupted, with a syscall that was
   * cut short set up to be issued again (`ctx`, for rt_sigreturn), or, for one
   * the kernel resumes through restart_syscall, set up to execute that (`home`). */
  ctx = regs;
  int restart_block = 0;
  if ((int64_t)regs.orig_rax >= 0) {
    int64_t rax = (int64_t)regs.rax;
    if (rax == -ERESTARTSYS || rax == -ERESTARTNOINTR || rax == -ERESTARTNOHAND || rax == -ERESTART_RESTARTBLOCK) {
      ctx.rip -= 2; ctx.rax = regs.orig_rax;
    }
    restart_block = rax == -ERESTART_RESTARTBLOCK;
  }
  struct user_regs_struct home = ctx;
  if (restart_block) home.rax = NR_restart_syscall;
  home.orig_rax = (uint64_t)-1;
  /* A thread about to execute a `syscall` (0f 05) goes home by the stub's own
   * code, which keeps the restart block; any other by rt_sigreturn. */
  uint16_t insn = 0;
  int way = HOME_SIGRETURN;
  if (pread(g_memfd, &insn, 2, (off_t)home.rip) == 2 && insn == 0x050f) way = fx || !g_xs.xsave ? HOME_FXRSTOR : HOME_XRSTOR;
  const struct user_regs_struct *fr = way == HOME_SIGRETURN ? &ctx : &home; /* what the frame holds */
  static int self_return = -1;
  if (self_return < 0) self_return = getenv("HOTLOAD_SHIM_SELF_RETURN") != NULL;
  DBG("call on %d: orig_rax %lld rax %lld rip %llx restart_block %d way %d", tid, (long long)regs.orig_rax, (long long)regs.rax,
      (unsigned long long)regs.rip, restart_block, way);

  /* Lay out the block below the red zone. */
  uint64_t top = regs.rsp - 128;
  uint64_t data_addr = (top - (uint64_t)data_len) & ~15ull;
  uint64_t fp_addr = (data_addr - fsize - 4) & ~63ull;
  uint64_t frame_uc = (fp_addr - sizeof(struct k_ucontext) - 128) & ~15ull; /* uc, then siginfo */
  uint64_t A = frame_uc - 16; /* rsp at the stub: slot at A, the way home at A+8 (rt_sigframe's pretcode) */
  size_t total = (size_t)(top - A);
  int64_t room = stack_room(regs.rsp);
  int64_t need = (int64_t)(regs.rsp - A) + CALL_HEADROOM;
  if (room < need) { hl_out[4] = room < 0 ? 0 : (uint64_t)room; hl_out[5] = (uint64_t)need; return -ENOSPC; }
  int r = data_reserve(total);
  if (r) return r;
  memset(g_data, 0, total);
  g_data[8] = (uint8_t)way;
  if (data_len > 0) memcpy(g_data + (data_addr - A), data, (size_t)data_len);
  uint8_t *fp = g_data + (fp_addr - A);
  memcpy(fp, xs, fsize);
  if (!fx && g_xs.xsave) {
    /* struct _fpx_sw_bytes in the legacy area's software-reserved bytes: what
     * rt_sigreturn checks before it XRSTORs the area (and where the stub's way
     * 1 reads the components to restore). The components and size are the
     * frame's; XSTATE_BV keeps only those components. */
    uint8_t *sw = fp + XS_SW;
    uint32_t magic1 = FP_XSTATE_MAGIC1, ext = fsize + 4, xsz = fsize, m2 = FP_XSTATE_MAGIC2;
    memset(sw, 0, 48);
    memcpy(sw + 0, &magic1, 4); /* magic1 */
    memcpy(sw + 4, &ext, 4);    /* extended_size: area + magic2 */
    memcpy(sw + 8, &features, 8);
    memcpy(sw + 16, &xsz, 4);   /* xstate_size */
    memcpy(fp + fsize, &m2, 4);
    uint64_t bv = xs_bv(fp, (int)fsize) & features;
    memcpy(fp + XS_LEGACY, &bv, 8);
  }
  struct k_ucontext *uc = (struct k_ucontext *)(g_data + (frame_uc - A));
  uc->uc_flags = (fx || !g_xs.xsave ? 0 : UC_FP_XSTATE) | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
  uc->uc_stack.ss_flags = 3; /* invalid on purpose: sigreturn leaves sigaltstack as it is */
  struct k_sigcontext *sc = &uc->uc_mcontext;
  sc->r8 = fr->r8; sc->r9 = fr->r9; sc->r10 = fr->r10; sc->r11 = fr->r11;
  sc->r12 = fr->r12; sc->r13 = fr->r13; sc->r14 = fr->r14; sc->r15 = fr->r15;
  sc->rdi = fr->rdi; sc->rsi = fr->rsi; sc->rbp = fr->rbp; sc->rbx = fr->rbx;
  sc->rdx = fr->rdx; sc->rax = fr->rax; sc->rcx = fr->rcx; sc->rsp = fr->rsp;
  sc->rip = fr->rip; sc->eflags = fr->eflags;
  sc->cs = (uint16_t)fr->cs; sc->ss = (uint16_t)fr->ss;
  sc->fpstate = fp_addr;
  uc->uc_sigmask = sigmask;

  if ((r = hl_write(A, g_data, (int)total)) != 0) return r;

  struct user_regs_struct call = regs;
  call.rip = stub;
  call.rsp = A;
  call.r11 = fn;
  call.rdi = data_len > 0 ? data_addr : a0; /* the data block, copied below the frame, is the first argument */
  call.rsi = a1;
  call.rdx = a2;
  call.rcx = a3;
  call.r8 = a4;
  call.r9 = a5;
  call.rax = 0;
  call.orig_rax = (uint64_t)-1; /* not in a syscall: no restart on resume (the restart block stays as it is) */
  call.eflags &= ~(0x400ull | 0x100ull); /* DF clear (ABI), TF clear */
  /* Every signal blocked while the call runs (the frame holds the thread's own
   * mask, which the way home puts back; what arrives meanwhile stays pending
   * and is delivered then). Delivering them during the call let a flood of
   * real-time signals starve it: each one a handler run and three ptrace stops,
   * the queue refilled as fast as it drained, and dlopen never began. The
   * registers first: a hotload that dies between the two leaves a thread that
   * runs the call with its own mask and goes home, never one back in its own
   * code with every signal blocked. */
  uint64_t all = ~((1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1)));
  if (ptrace(PTRACE_SETREGS, tid, 0, &call) != 0) return -errno;
  if (ptrace(PTRACE_SETSIGMASK, tid, (void *)sizeof all, &all) != 0) {
    int e = errno;
    ptrace(PTRACE_SETREGS, tid, 0, &regs);
    return -e;
  }
  if (ptrace(PTRACE_SYSCALL, tid, 0, 0) != 0) return -errno;
  mark_resumed(t);

  uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)timeout_ms * 1000000ull;
  /* Short sleeps while polling need fine timer slack (the default is 50 us). */
  unsigned long old_slack = (unsigned long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  uint64_t result = 0, stops = 0;
  /* 0: in the call; 1: on the way home by itself (HOTLOAD_SHIM_SELF_RETURN);
   * 2: home, or skipped there, and the next syscall stop ends the wait. */
  int phase = 0, skipped = 0, spins = 0, failed = 0, clobbered = 0;
  for (;;) {
    pid_t who;
    int st;
    if (!wait_any(&who, &st)) {
      if (now_ns() > deadline) { hl_out[1] = stops; prctl(PR_SET_TIMERSLACK, old_slack); return -ETIMEDOUT; }
      /* Sleep, do not spin: on a small machine a spinning tracer takes the CPU
       * the target's threads (the host among them) need. */
      struct timespec ts = { 0, spins++ < 100 ? 10000 : 50000 };
      nanosleep(&ts, NULL);
      continue;
    }
    spins = 0;
    struct thread *w = find_thread(who);
    if (WIFEXITED(st) || WIFSIGNALED(st)) {
      w->gone = 1;
      if (who == tid || who == g_pid) { prctl(PR_SET_TIMERSLACK, old_slack); return -ESRCH; } /* the process died */
      continue;
    }
    int event = st >> 16, sig = WSTOPSIG(st);
    DBG("call: %d event %d sig %d", who, event, sig);
    if (who != tid) {
      /* Another thread: pass its signal on, ignore stray interrupt stops. */
      int pass = (event == 0 && sig != (SIGTRAP | 0x80)) ? sig : 0;
      ptrace(PTRACE_CONT, who, 0, (void *)(long)pass);
      continue;
    }
    int resume_sig = 0;
    if (event == 0 && sig == (SIGTRAP | 0x80)) {
      stops++;
      struct user_regs_struct now;
      if (ptrace(PTRACE_GETREGS, tid, 0, &now) != 0) { prctl(PR_SET_TIMERSLACK, old_slack); return -errno; }
      DBG("call: syscall stop nr %lld rip %llx", (long long)now.orig_rax, (unsigned long long)now.rip);
      if (phase == 2) break; /* exit of our rt_sigreturn, or of the call skipped at home */
      if (phase == 0 && !clobbered && way != HOME_SIGRETURN && home.rax == NR_restart_syscall &&
          (now.orig_rax == NR_nanosleep || now.orig_rax == NR_clock_nanosleep || now.orig_rax == NR_restart_syscall ||
           (int64_t)now.rax == -ERESTART_RESTARTBLOCK)) {
        /* The call's own code reset or took the restart block: nanosleep and
         * clock_nanosleep reset it as they begin; a wait of its own that was
         * interrupted took it. restart_syscall would now fail the thread's
         * wait with EINTR (or run the other wait's restart). Its own call, if
         * known (not itself restart_syscall), is issued again instead, in the
         * frame too (a hotload that dies now leaves the same): a relative
         * timeout starts over, nothing sees EINTR. */
        clobbered = 1;
        DBG("call: the call's own syscall %lld (rax %lld) replaced the restart block", (long long)now.orig_rax, (long long)now.rax);
        if ((int64_t)regs.orig_rax >= 0 && regs.orig_rax != NR_restart_syscall) {
          home.rax = regs.orig_rax;
          uint64_t at = frame_uc + offsetof(struct k_ucontext, uc_mcontext) + offsetof(struct k_sigcontext, rax);
          if (hl_write(at, (const uint8_t *)&home.rax, 8) != 0) DBG("call: could not rewrite the frame's rax");
        }
      }
      uint64_t slot = 0;
      if (phase == 0 && way == HOME_SIGRETURN && now.orig_rax == NR_rt_sigreturn && now.rip == stub_sigreturn_end) {
        /* Entry of our rt_sigreturn: the slot holds the result. It runs
         * (restoring everything), except for a thread that must keep its
         * restart block but resumes on no `syscall` we know: that one is
         * put back by ptrace, the rt_sigreturn skipped. */
        if (pread(g_memfd, &slot, 8, (off_t)A) == 8) result = slot;
        phase = 2;
        if (restart_block) {
          failed = put_state(tid, &home, xs, xsize, fx, sigmask);
          skipped = !(failed & 1);
        }
      } else if (phase == 0 && way != HOME_SIGRETURN && now.orig_rax == NR_rt_sigprocmask && now.rip == stub_sigprocmask_end) {
        /* Entry of the stub's rt_sigprocmask: the result is in. Skip the rest
         * of the way home and put the thread there by ptrace. */
        if (pread(g_memfd, &slot, 8, (off_t)A) == 8) result = slot;
        if (self_return) {
          phase = 1;
        } else {
          failed = put_state(tid, &home, xs, xsize, fx, sigmask);
          skipped = !(failed & 1);
          phase = 2;
        }
      } else if (phase == 1 && now.rip == home.rip + 2 && now.rsp == home.rsp && now.orig_rax == home.rax && (int64_t)now.rax == -ENOSYS) {
        /* Entry of the `syscall` the stub jumped onto: compare what the stub
         * put back (rcx and r11 are the syscall's: the return address and
         * the flags), then put the thread back before that syscall. */
        struct user_regs_struct want = home;
        want.rip = now.rip; want.rcx = now.rcx; want.r11 = now.r11; want.rax = now.rax;
        int d = state_differs(tid, &want, xs, xsize, sigmask, &x2);
        if (d) DBG("call: the stub's own way home left %d different", d);
        hl_out[3] |= (uint64_t)d;
        failed = put_state(tid, &home, xs, xsize, fx, sigmask);
        skipped = !(failed & 1);
        phase = 2;
      }
    } else if (event == 0) {
      resume_sig = sig; /* deliver it */
    }
    if (ptrace(PTRACE_SYSCALL, tid, 0, (void *)(long)resume_sig) != 0) { prctl(PR_SET_TIMERSLACK, old_slack); return -errno; }
  }
  mark_stopped(t);
  prctl(PR_SET_TIMERSLACK, old_slack, 0, 0, 0);
  hl_out[0] = result;
  hl_out[1] = stops;
  hl_out[2] = now_ns() - t0;
  hl_out[7] = (uint64_t)way;

  /* Home: rt_sigreturn put the thread back, or (skipped) ptrace did. Then it
   * must hold exactly what it held, or what differs is set again. */
  const struct user_regs_struct *want = skipped ? &home : &ctx;
  int differs = state_differs(tid, want, xs, xsize, sigmask, &x2);
  if (differs) {
    DBG("call: state differs after the call (%d); setting it again", differs);
    struct user_regs_struct w = *want;
    w.orig_rax = (uint64_t)-1;
    failed |= put_state(tid, &w, xs, xsize, fx, sigmask);
    hl_out[3] |= (uint64_t)differs;
    differs = state_differs(tid, want, xs, xsize, sigmask, &x2);
  }
  if (differs || failed) { hl_out[4] = (uint64_t)(differs | failed); return -EIO; }
  return 0;
}


/* Every stopped thread's tid, rip, rax, orig_rax, rsp and rbp, 6 x u64 each,
 * into the data buffer (one FFI call instead of one per thread). Returns the
 * count. A thread stopped with a job-control signal to deliver is left out. */
int hl_survey(void) {
  int r = data_reserve((size_t)g_nthreads * 48);
  if (r) return r;
  int n = 0;
  uint64_t *o = (uint64_t *)g_data;
  for (int i = 0; i < g_nthreads; i++) {
    struct thread *t = &g_threads[i];
    struct user_regs_struct regs;
    if (t->gone || !t->stopped || t->pending_sig || ptrace(PTRACE_GETREGS, t->tid, 0, &regs) != 0) continue;
    o[n * 6] = (uint64_t)t->tid;
    o[n * 6 + 1] = regs.rip;
    o[n * 6 + 2] = regs.rax;
    o[n * 6 + 3] = regs.orig_rax;
    o[n * 6 + 4] = regs.rsp;
    o[n * 6 + 5] = regs.rbp;
    n++;
  }
  return n;
}

/*
 * Apply a batch of code writes with every thread stopped, all or nothing.
 * `ops` holds records: u64 addr, u32 len, u32 flags, then len bytes expected
 * and len bytes to write. Records flagged APPLY_ENTRY (2-byte entry sites) go
 * in a second phase, after every other record: while an entry still holds its
 * NOPs, nothing can reach its pad, so a write cut short between the phases
 * (hotload killed) leaves every function whole.
 *
 * Records close together are merged into spans of at most one page, so the
 * whole batch costs a few reads and writes of /proc/PID/mem, not two per
 * record. First every expected byte is checked (a mismatch returns -ESTALE
 * with hl_out[0] = the record's index, and nothing is written). Then a thread
 * stopped between the two single-byte NOPs of an entry site (rip = addr + 1)
 * is moved past them. Then the spans are written, phase by phase; if a write
 * fails, the spans written before it are put back and its error returned.
 */
#define APPLY_ENTRY 1
struct op { uint64_t addr; uint32_t len; uint32_t flags; };
struct rec { uint64_t addr; uint32_t len; int phase; int index; const uint8_t *expect, *bytes; };
struct span { uint64_t start; uint32_t len; int phase; uint8_t *orig, *data; };

static int rec_cmp(const void *a, const void *b) {
  const struct rec *x = a, *y = b;
  if (x->phase != y->phase) return x->phase - y->phase;
  return x->addr < y->addr ? -1 : x->addr > y->addr;
}

int hl_apply(const uint8_t *ops, int total) {
  const uint8_t *p, *end = ops + total;
  int n = 0, r = 0;
  for (p = ops; p + sizeof(struct op) <= end; n++) {
    struct op h;
    memcpy(&h, p, sizeof h);
    if (h.len == 0 || h.len > 64 || p + sizeof h + 2 * (size_t)h.len > end) return -EINVAL;
    p += sizeof h + 2 * (size_t)h.len;
  }
  struct rec *recs = calloc((size_t)n + 1, sizeof *recs);
  struct span *spans = calloc((size_t)n + 1, sizeof *spans);
  if (!recs || !spans) { free(recs); free(spans); return -ENOMEM; }
  int i = 0;
  for (p = ops; i < n; i++) {
    struct op h;
    memcpy(&h, p, sizeof h);
    recs[i] = (struct rec){ h.addr, h.len, (h.flags & APPLY_ENTRY) ? 1 : 0, i, p + sizeof h, p + sizeof h + h.len };
    p += sizeof h + 2 * (size_t)h.len;
  }
  uint64_t ta = now_ns();
  qsort(recs, (size_t)n, sizeof *recs, rec_cmp);

  /* Spans: consecutive records of one phase within one 4 KiB window. */
  int ns = 0;
  for (i = 0; i < n; i++) {
    struct span *sp = ns ? &spans[ns - 1] : NULL;
    uint64_t rend = recs[i].addr + recs[i].len;
    if (sp && sp->phase == recs[i].phase && recs[i].addr >= sp->start && rend - sp->start <= 4096) {
      if (rend > sp->start + sp->len) sp->len = (uint32_t)(rend - sp->start);
    } else {
      spans[ns++] = (struct span){ recs[i].addr, recs[i].len, recs[i].phase, NULL, NULL };
    }
  }
  for (int k = 0; k < ns; k++) {
    spans[k].orig = malloc(spans[k].len);
    spans[k].data = malloc(spans[k].len);
    if (!spans[k].orig || !spans[k].data) { r = -ENOMEM; goto out; }
    if (pread(g_memfd, spans[k].orig, spans[k].len, (off_t)spans[k].start) != (ssize_t)spans[k].len) { r = -EIO; hl_out[0] = 0; goto out; }
    memcpy(spans[k].data, spans[k].orig, spans[k].len);
  }
  DBG("apply: %d records, %d spans, read in %.3f ms", n, ns, (now_ns() - ta) / 1e6);
  /* Check every expected byte, and lay the new bytes into the span copies. */
  for (i = 0; i < n; i++) {
    int k = 0;
    while (k < ns && !(spans[k].phase == recs[i].phase && recs[i].addr >= spans[k].start && recs[i].addr + recs[i].len <= spans[k].start + spans[k].len)) k++;
    if (k == ns) { r = -EINVAL; goto out; }
    size_t off = (size_t)(recs[i].addr - spans[k].start);
    if (memcmp(spans[k].orig + off, recs[i].expect, recs[i].len) != 0) { hl_out[0] = (uint64_t)recs[i].index; r = -ESTALE; goto out; }
    memcpy(spans[k].data + off, recs[i].bytes, recs[i].len);
  }
  /* A phase-1 span covers bytes between entries, pads among them: it must
   * carry the phase-0 bytes too, or writing it would put the old pads back. */
  for (int k = 0; k < ns; k++) {
    if (spans[k].phase != 1) continue;
    for (i = 0; i < n && recs[i].phase == 0; i++) {
      uint64_t a0 = recs[i].addr > spans[k].start ? recs[i].addr : spans[k].start;
      uint64_t a1 = recs[i].addr + recs[i].len < spans[k].start + spans[k].len ? recs[i].addr + recs[i].len : spans[k].start + spans[k].len;
      if (a0 < a1) memcpy(spans[k].data + (a0 - spans[k].start), recs[i].bytes + (a0 - recs[i].addr), (size_t)(a1 - a0));
    }
  }
  /* Each stopped thread's rip once; move any that sits inside an entry site.
   * Only a `90 90` entry has an inside (a posted `66 90` is one instruction). */
  int split = 0;
  for (i = 0; i < n; i++) split |= recs[i].phase == 1 && recs[i].len == 2 && recs[i].expect[0] == 0x90 && recs[i].expect[1] == 0x90;
  for (int t = 0; split && t < g_nthreads; t++) {
    struct thread *th = &g_threads[t];
    struct user_regs_struct regs;
    if (th->gone || !th->stopped || ptrace(PTRACE_GETREGS, th->tid, 0, &regs) != 0) continue;
    for (i = 0; i < n; i++) {
      if (recs[i].phase == 1 && regs.rip == recs[i].addr + 1) {
        regs.rip = recs[i].addr + 2;
        ptrace(PTRACE_SETREGS, th->tid, 0, &regs);
        break;
      }
    }
  }
  DBG("apply: checked and moved threads at %.3f ms", (now_ns() - ta) / 1e6);
  /* Write, phase 0 spans then phase 1 spans (they are sorted that way). */
  for (int k = 0; k < ns; k++) {
    int w = hl_write(spans[k].start, spans[k].data, (int)spans[k].len);
    if (w != 0) {
      while (k-- > 0) hl_write(spans[k].start, spans[k].orig, (int)spans[k].len);
      hl_out[0] = 0;
      r = w;
      goto out;
    }
  }
out:
  DBG("apply: done at %.3f ms (%d)", (now_ns() - ta) / 1e6, r);
  for (int k = 0; k < ns; k++) { free(spans[k].orig); free(spans[k].data); }
  free(spans);
  free(recs);
  return r;
}
