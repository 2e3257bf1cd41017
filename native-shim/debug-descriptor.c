/*
 * libhotload-debug.so: the one place in a patched process where debuggers look
 * for code hotload mapped itself (patches made from a rebuild are mapped next
 * to the program, not loaded by dlopen, so they are not in the loader's list).
 *
 * It defines the two symbols of the GDB JIT interface, which gdb and lldb read
 * in every library they know of: __jit_debug_descriptor (the head of a list of
 * in-memory ELF files with their debug information) and
 * __jit_debug_register_code (the function a debugger breaks on to hear of new
 * entries). hotload dlopens it into a process once, then links one entry per
 * loaded patch into the list by writing the process's memory
 * (packages/injector/src/debug-register.ts). Nothing in the process reads or
 * writes the list.
 *
 * No C library: built with -nostdlib, it loads into any x86-64 process.
 */
#include <stdint.h>

struct jit_code_entry {
  struct jit_code_entry *next_entry;
  struct jit_code_entry *prev_entry;
  const char *symfile_addr;
  uint64_t symfile_size;
};

struct jit_descriptor {
  uint32_t version;
  uint32_t action_flag; /* 0 no action, 1 register, 2 unregister */
  struct jit_code_entry *relevant_entry;
  struct jit_code_entry *first_entry;
};

__attribute__((visibility("default"), noinline, used)) void __jit_debug_register_code(void) {
  __asm__ volatile("" ::: "memory");
}

__attribute__((visibility("default"), used)) struct jit_descriptor __jit_debug_descriptor = {1, 0, 0, 0};
