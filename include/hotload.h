/*
 * hotload.h: write a live patch for a running program, in C.
 *
 *   #include <hotload.h>
 *
 *   // the running program has:  static int counter;  int compute(int x) { ... }
 *   HOTLOAD_STATIC(int, counter);                 // reach the program's own `counter`
 *
 *   int compute_v2(int x) {                       // the new code
 *     HOTLOAD_REF(counter)++;                     // the count carries on, not from zero
 *     return x * 3;
 *   }
 *   HOTLOAD_REPLACE(compute, compute_v2);         // every call of compute now runs compute_v2
 *
 * Build it against the exact file the process runs:
 *   hotload mkpatch patch.c --target ./server -o patch.so
 * and apply it:
 *   hotload attach <pid> patch.so
 *
 * - HOTLOAD_REPLACE(old, new): `old` is the name of a function of the target,
 *   global or file-local (static); `new` a function of the patch with the same
 *   signature. Calls to `old` from anywhere go to `new`.
 * - HOTLOAD_STATIC(type, name): a pointer to the target's `name` (a static
 *   variable or function, or a global that the target does not export). hotload
 *   resolves it from the target's symbol table and fills it in before any of the
 *   patch's functions go live. Use it as HOTLOAD_REF(name). For a function,
 *   give its type:  typedef int helper_fn(int); HOTLOAD_STATIC(helper_fn, helper);
 * - Globals the target exports (in its dynamic symbol table: any global of a
 *   shared library, or of a program linked with -rdynamic) are plain externs.
 * - HOTLOAD_ON_APPLY(fn) / HOTLOAD_ON_REVERT(fn): `int fn(void)` runs in the
 *   target, on one of its threads, after the statics are resolved and before the
 *   patch goes live / before it is reverted (to migrate or initialise state).
 *   Non-zero aborts the apply or revert, and nothing changes; say why with
 *   `return HOTLOAD_HOOK_FAIL("queue not empty");` and hotload prints it.
 * - HOTLOAD_DESCRIPTION("fix the off-by-one in the queue (BUG-1234)"): what the
 *   patch is, shown by `hotload status`, `ps` and `--json` (or give it with
 *   `hotload mkpatch --description`).
 *
 * C++: the new function is an ordinary C++ function (any linkage); a method is
 * replaced by a function taking `this` as its first parameter. Name the old
 * function as C++ names it, in a string (parameter lists have commas):
 *   int area_v2(const Square *self) { return self->side * self->side + 1; }
 *   HOTLOAD_REPLACE_CXX("Square::area() const", area_v2);
 *   HOTLOAD_REPLACE_CXX("count(int, int)", count_v2);    // overloads: say which
 * or by its mangled name with HOTLOAD_REPLACE (`hotload index --json` lists
 * both). Or let the patch define the function itself, as the program's source
 * does (a member, a constructor, an operator, a template instance), with the
 * class declared as the program declares it, and name it:
 *   int Square::area() const { return side * side + 1; }
 *   HOTLOAD_REDEFINE_CXX("Square::area() const");
 */
#ifndef HOTLOAD_H
#define HOTLOAD_H

#define HOTLOAD_CAT_(a, b) a##b
#define HOTLOAD_CAT(a, b) HOTLOAD_CAT_(a, b)

/* Pairs "old\0new\0" in a section the injector reads from the file. */
#define HOTLOAD_REPLACE(old, new_fn)                                                              \
  __attribute__((used, section(".hotload.replace"))) static const char                           \
      HOTLOAD_CAT(hotload_replace__, new_fn)[] = #old "\0" #new_fn;                              \
  /* Keeps a `static` new function from being dropped as unused. */                             \
  __attribute__((used)) static void *const HOTLOAD_CAT(hotload_keep__, new_fn) = (void *)new_fn; \
  /* What `old` ran before this patch: filled in by hotload, kept for revert and status. */       \
  __attribute__((used, visibility("default"))) void *HOTLOAD_CAT(hotload_prev__, new_fn) = 0

/* C++: the old function named by a string, as C++ source names it. */
#ifdef __cplusplus
#define HOTLOAD_REPLACE_CXX(old, new_fn)                                                          \
  __attribute__((used, section(".hotload.replace"))) static const char                           \
      HOTLOAD_CAT(hotload_replace__, new_fn)[] = old "\0" #new_fn;                                \
  __attribute__((used)) static void *const HOTLOAD_CAT(hotload_keep__, new_fn) = (void *)new_fn; \
  extern "C" __attribute__((used, visibility("default"))) void *HOTLOAD_CAT(hotload_prev__, new_fn) = 0
#endif

/* C++: the patch's own definition of the function named (by its C++ name)
   replaces the program's. A record of two pointers, found through their
   relocations: the name, and the slot for what ran before. */
#ifdef __cplusplus
struct hotload_redefinition {
  const char *name;
  void **previous;
};
#define HOTLOAD_REDEFINE_CXX(name) HOTLOAD_REDEFINE_CXX_(name, __COUNTER__)
#define HOTLOAD_REDEFINE_CXX_(name, n) HOTLOAD_REDEFINE_CXX__(name, n)
#define HOTLOAD_REDEFINE_CXX__(name, n)                                                            \
  static void *hotload_redefined_previous__##n = 0;                                                \
  __attribute__((used, section(".hotload.redefine"))) static const hotload_redefinition            \
      hotload_redefined__##n = {name, &hotload_redefined_previous__##n}
#endif

#define HOTLOAD_STATIC(type, name) \
  __attribute__((used, visibility("default"))) type *HOTLOAD_CAT(hotload_ref__, name) = 0

#define HOTLOAD_REF(name) (*HOTLOAD_CAT(hotload_ref__, name))

#define HOTLOAD_DESCRIPTION(text) \
  __attribute__((used, section(".hotload.description"))) static const char hotload_description[] = text

#define HOTLOAD_ON_APPLY(fn) \
  __attribute__((used, visibility("default"))) int (*const hotload_on_apply)(void) = fn
#define HOTLOAD_ON_REVERT(fn) \
  __attribute__((used, visibility("default"))) int (*const hotload_on_revert)(void) = fn

/* The message of a failing hook, read by hotload. */
__attribute__((weak, visibility("default"))) const char *hotload_hook_message;
#define HOTLOAD_HOOK_FAIL(msg) (hotload_hook_message = (msg), 1)

#endif /* HOTLOAD_H */
