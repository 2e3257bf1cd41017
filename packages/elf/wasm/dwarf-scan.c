// The loop of the DWARF reader (dwarf.ts), compiled to WebAssembly: it walks
// .debug_info entry by entry and fills, per unit, what dwarf.ts makes its
// EntryTable of: each entry's record of numbers, its references (as offsets
// and as indexes of the unit's entries), its names (one text per unit), and
// its exact constants; dwarf.ts then hands the tables to their users. What it keeps and steps over is described
// in dwarf.ts; this file only does it, without the warm-up a JavaScript loop
// needs (a one-shot `hotload mkpatch` reads every changed object of two
// builds once, and V8 would still be compiling its reader when it is done).
//
// No C library: the module has one linear memory, a bump allocator over it
// (reset per file), and reports errors as negative codes (dwarf.ts words
// them). Every read is bounds-checked: a truncated or malformed file stops the
// scan with an error, never a read outside its section.

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned long usize;

#define EXPORT(name) __attribute__((export_name(name)))

/* Relocation types applied to debug sections (checked against packages/elf/src/relocations.ts by its test). */
#define R_X86_64_32 10
#define R_X86_64_32S 11

// ---- memory ---------------------------------------------------------------

extern u8 __heap_base;
static usize heap_top;

static usize memory_end(void) { return (usize)__builtin_wasm_memory_size(0) * 65536; }

/** `n` bytes, 8-aligned; 0 when memory cannot grow. */
static void *alloc(usize n) {
  if (!heap_top) heap_top = (usize)&__heap_base;
  usize at = (heap_top + 7) & ~(usize)7;
  if (at + n < at) return 0;
  if (at + n > memory_end()) {
    usize pages = (at + n - memory_end() + 65535) / 65536;
    if (__builtin_wasm_memory_grow(0, pages) == (usize)-1) return 0;
  }
  heap_top = at + n;
  return (void *)at;
}

// The compiler may call these for struct copies and clearing loops.
void *memcpy(void *to, const void *from, usize n) {
  u8 *t = to;
  const u8 *f = from;
  for (usize i = 0; i < n; i++) t[i] = f[i];
  return to;
}
void *memset(void *to, int c, usize n) {
  u8 *t = to;
  for (usize i = 0; i < n; i++) t[i] = (u8)c;
  return to;
}

/** Room for `n` bytes of input (JavaScript writes a section there). */
EXPORT("alloc") void *alloc_export(usize n) { return alloc(n); }

/** Forget everything allocated: the next file starts from the bottom. */
EXPORT("reset") void reset(void) { heap_top = (usize)&__heap_base; }

/** A growable array of `size`-byte elements. */
typedef struct {
  u8 *data;
  u32 n, cap, size;
} Vec;

static int vec_room(Vec *v, u32 more) {
  if (v->n + more <= v->cap) return 1;
  u32 cap = v->cap ? v->cap * 2 : 256;
  while (cap < v->n + more) cap *= 2;
  u8 *data = alloc((usize)cap * v->size);
  if (!data) return 0;
  if (v->n) memcpy(data, v->data, (usize)v->n * v->size);
  v->data = data;
  v->cap = cap;
  return 1;
}

// ---- errors (dwarf.ts words each) ----------------------------------------

enum { E_TRUNCATED = -1, E_DWARF64 = -2, E_ABBREV = -3, E_FORM = -4, E_MEMORY = -5 };
/** The abbreviation code or form of the last error. */
static u32 error_detail;

// ---- the reader ------------------------------------------------------------

typedef struct {
  const u8 *b;
  u32 p, len;
  int bad;
} Reader;

static u8 u8at(Reader *r) {
  if (r->p >= r->len) { r->bad = 1; return 0; }
  return r->b[r->p++];
}
static u32 uN(Reader *r, int n) {
  if (r->p + n > r->len || r->p + n < r->p) { r->bad = 1; r->p = r->len; return 0; }
  u32 v = 0;
  for (int i = 0; i < n; i++) v |= (u32)r->b[r->p + i] << (8 * i);
  r->p += n;
  return v;
}
static u64 u64at(Reader *r) {
  u64 lo = uN(r, 4);
  u64 hi = uN(r, 4);
  return lo | hi << 32;
}
static u64 uleb(Reader *r) {
  u64 v = 0;
  for (u32 shift = 0;; shift += 7) {
    u8 byte = u8at(r);
    if (shift < 64) v |= (u64)(byte & 0x7f) << shift;
    if (!(byte & 0x80) || r->bad) return v;
  }
}
static i64 sleb(Reader *r) {
  u64 v = 0;
  u32 shift = 0;
  u8 byte;
  do {
    byte = u8at(r);
    if (shift < 64) v |= (u64)(byte & 0x7f) << shift;
    shift += 7;
  } while ((byte & 0x80) && !r->bad);
  if (shift < 64 && (byte & 0x40)) v |= ~(u64)0 << shift;
  return (i64)v;
}
static void skip(Reader *r, u64 n) {
  if (n > r->len - r->p) { r->bad = 1; r->p = r->len; return; }
  r->p += (u32)n;
}

// ---- DWARF numbers (those dwarf.ts names) ----------------------------------

enum {
  AT_sibling = 0x01, AT_name = 0x03, AT_byteSize = 0x0b, AT_bitOffset = 0x0c, AT_bitSize = 0x0d, AT_lowPc = 0x11,
  AT_compDir = 0x1b, AT_constValue = 0x1c, AT_containingType = 0x1d, AT_producer = 0x25, AT_upperBound = 0x2f,
  AT_abstractOrigin = 0x31, AT_count = 0x37, AT_dataMemberLocation = 0x38, AT_declLine = 0x3b, AT_declaration = 0x3c,
  AT_external = 0x3f, AT_specification = 0x47, AT_type = 0x49, AT_virtuality = 0x4c, AT_vtableElemLocation = 0x4d,
  AT_ranges = 0x55, AT_dataBitOffset = 0x6b, AT_linkageName = 0x6e, AT_strOffsetsBase = 0x72, AT_dwoName = 0x76,
  AT_mipsLinkageName = 0x2007, AT_gnuDwoName = 0x2130,
};
enum {
  TAG_class = 0x02, TAG_label = 0x0a, TAG_lexicalBlock = 0x0b, TAG_formalParameter = 0x05, TAG_structure = 0x13,
  TAG_union = 0x17, TAG_unspecifiedParameters = 0x18, TAG_inlinedSubroutine = 0x1d, TAG_subprogram = 0x2e,
  TAG_variable = 0x34, TAG_dwarfProcedure = 0x36, TAG_callSite = 0x48, TAG_callSiteParameter = 0x49,
  TAG_gnuCallSite = 0x4109, TAG_gnuCallSiteParameter = 0x410a,
};
enum { OP_constu = 0x10, OP_plus_uconst = 0x23 };

// Where each field is in an entry's record, and the record's size: as
// dwarf.ts's `S` and `VALUES` (its tests check that the two agree).
enum {
  S_tag, S_parent, S_end, S_full, S_byteSize, S_memberOffset, S_bitSize, S_dataBitOffset, S_bitOffset, S_upperBound,
  S_count, S_virtuality, S_vtableElem, S_declLine, S_declaration, S_external, S_concrete, VALUES,
};
enum { R_off, R_type, R_origin, R_containingType, REFS };

/** What the loop does with an attribute (dwarf.ts's Act). */
enum {
  A_skip, A_str, A_type, A_origin, A_containingType, A_byteSize, A_bitSize, A_dataBitOffset, A_bitOffset, A_upperBound,
  A_count, A_virtuality, A_declLine, A_memberOffset, A_vtableElem, A_constValue, A_external, A_declaration, A_concrete,
  A_split, A_strOffsetsBase,
};

static int act_of(u32 a) {
  switch (a) {
    case AT_name: case AT_linkageName: case AT_mipsLinkageName: case AT_producer: case AT_compDir: return A_str;
    case AT_type: return A_type;
    case AT_abstractOrigin: case AT_specification: return A_origin;
    case AT_containingType: return A_containingType;
    case AT_byteSize: return A_byteSize;
    case AT_bitSize: return A_bitSize;
    case AT_dataBitOffset: return A_dataBitOffset;
    case AT_bitOffset: return A_bitOffset;
    case AT_upperBound: return A_upperBound;
    case AT_count: return A_count;
    case AT_virtuality: return A_virtuality;
    case AT_declLine: return A_declLine;
    case AT_dataMemberLocation: return A_memberOffset;
    case AT_vtableElemLocation: return A_vtableElem;
    case AT_constValue: return A_constValue;
    case AT_external: return A_external;
    case AT_declaration: return A_declaration;
    case AT_lowPc: case AT_ranges: return A_concrete;
    case AT_dwoName: case AT_gnuDwoName: return A_split;
    case AT_strOffsetsBase: return A_strOffsetsBase;
    default: return A_skip;
  }
}
/** Attributes an Entry (not only a FullEntry) has a field for. */
static int common(u32 a) {
  return a == AT_name || a == AT_type || a == AT_byteSize || a == AT_dataMemberLocation || a == AT_declaration ||
         a == AT_strOffsetsBase || a == AT_producer || a == AT_compDir || a == AT_dwoName || a == AT_gnuDwoName;
}
/** The size of a form whose values all have one (DW_FORM_addr aside), or -1. */
static int fixed_size(u32 f) {
  switch (f) {
    case 0x19: case 0x21: return 0;
    case 0x0b: case 0x0c: case 0x11: case 0x25: case 0x29: return 1;
    case 0x05: case 0x12: case 0x26: case 0x2a: return 2;
    case 0x27: case 0x2b: return 3;
    case 0x06: case 0x0e: case 0x10: case 0x13: case 0x17: case 0x1c: case 0x1d: case 0x1f: case 0x28: case 0x2c: return 4;
    case 0x07: case 0x14: case 0x20: case 0x24: return 8;
    case 0x1e: return 16;
    default: return -1;
  }
}

// ---- abbreviations ---------------------------------------------------------

typedef struct {
  u32 attr, form;
  int act;
  i64 implicit;
} Spec;

typedef struct {
  u32 tag, nspecs;
  Spec *specs;
  u8 children, unread, body, opens, symbol, concrete, full, prune;
  int fixed, addrs, sibling;
} Abbrev;


typedef struct {
  u32 off, n;
  /** Indexed by code; 0 for a code the table does not define. */
  Abbrev **byCode;
} Table;

static Vec tables; // of Table, per file

static int unread_tag(u32 t) {
  return t == TAG_callSite || t == TAG_callSiteParameter || t == TAG_gnuCallSite || t == TAG_gnuCallSiteParameter ||
         t == TAG_label || t == TAG_lexicalBlock || t == TAG_unspecifiedParameters || t == TAG_dwarfProcedure;
}

/** The abbreviation table at `off` of .debug_abbrev, read once per file; 0 with *err set if it cannot be read. */
static Table *abbrevs(const u8 *data, u32 len, u32 off, int *err) {
  Table *ts = (Table *)tables.data;
  for (u32 i = 0; i < tables.n; i++) if (ts[i].off == off) return &ts[i];
  if (off > len) { *err = E_TRUNCATED; return 0; }
  Reader r = {data, off, len, 0};
  Vec list = {0, 0, 0, sizeof(Abbrev *)};
  Vec codes = {0, 0, 0, sizeof(u32)};
  u32 maxCode = 0;
  for (;;) {
    u64 code = uleb(&r);
    if (r.bad) { *err = E_TRUNCATED; return 0; }
    if (code == 0) break;
    if (code > (1u << 20)) { error_detail = (u32)code; *err = E_ABBREV; return 0; }
    Abbrev *ab = alloc(sizeof(Abbrev));
    if (!ab || !vec_room(&list, 1) || !vec_room(&codes, 1)) { *err = E_MEMORY; return 0; }
    ((Abbrev **)list.data)[list.n++] = ab;
    ((u32 *)codes.data)[codes.n++] = (u32)code;
    if (code > maxCode) maxCode = (u32)code;
    u32 tag = (u32)uleb(&r);
    u8 children = u8at(&r) == 1;
    *ab = (Abbrev){.tag = tag, .children = children, .sibling = -1};
    ab->unread = unread_tag(tag);
    ab->body = tag == TAG_formalParameter || tag == TAG_variable || tag == TAG_inlinedSubroutine || tag == TAG_label ||
               tag == TAG_unspecifiedParameters;
    ab->opens = tag == TAG_subprogram || tag == TAG_inlinedSubroutine || tag == TAG_lexicalBlock;
    ab->symbol = tag == TAG_subprogram || tag == TAG_variable;
    ab->prune = tag == TAG_callSite || tag == TAG_gnuCallSite ? 1 : tag == TAG_inlinedSubroutine ? 2 : 0;
    Vec specs = {0, 0, 0, sizeof(Spec)};
    for (;;) {
      u32 a = (u32)uleb(&r);
      u32 f = (u32)uleb(&r);
      if (r.bad) { *err = E_TRUNCATED; return 0; }
      if (a == 0 && f == 0) break;
      if (!vec_room(&specs, 1)) { *err = E_MEMORY; return 0; }
      Spec *s = &((Spec *)specs.data)[specs.n];
      *s = (Spec){a, f, A_skip, 0};
      if (f == 0x21) s->implicit = sleb(&r);
      if (a == AT_sibling && children) ab->sibling = (int)specs.n;
      // A concrete instance's types are its abstract instance's; a declaration (a prototype) defines none.
      if (tag == TAG_subprogram && (a == AT_abstractOrigin || (a == AT_declaration && f == 0x19))) ab->prune = 2;
      int act = act_of(a);
      int read = act != A_skip && (a != AT_declLine || tag == TAG_subprogram); // a line is read of functions only
      if (read) s->act = act;
      if (tag == TAG_subprogram && (a == AT_lowPc || a == AT_ranges)) ab->concrete = 1;
      if (read && !common(a)) ab->full = 1;
      int size = fixed_size(f);
      if (f == 0x01) ab->addrs++;
      else if (size < 0) ab->fixed = -1;
      else if (ab->fixed >= 0) ab->fixed += size;
      specs.n++;
    }
    if (r.bad) { *err = E_TRUNCATED; return 0; }
    if (ab->fixed < 0) ab->addrs = 0;
    ab->specs = (Spec *)specs.data;
    ab->nspecs = specs.n;
  }
  Abbrev **byCode = alloc(((usize)maxCode + 1) * sizeof(Abbrev *));
  if (!byCode || !vec_room(&tables, 1)) { *err = E_MEMORY; return 0; }
  for (u32 i = 0; i <= maxCode; i++) byCode[i] = 0;
  for (u32 i = 0; i < list.n; i++) byCode[((u32 *)codes.data)[i]] = ((Abbrev **)list.data)[i];
  Table *t = &((Table *)tables.data)[tables.n++];
  *t = (Table){off, maxCode + 1, byCode};
  return t;
}

// ---- what a scan gives -----------------------------------------------------

/** Where a string is: 0 none, 1 .debug_str, 2 .debug_info (DW_FORM_string), 3 .debug_line_str; and its offset there. */
enum { STR_none, STR_str, STR_info, STR_lineStr };
/** Per entry: its name's place and its linkage name's (kind, offset each). */
enum { P_nameKind, P_name, P_linkageKind, P_linkage, PLACES };
/** Per DW_AT_const_value (in `constList`): 1 unsigned or 2 signed, its low and high 32 bits, the entry's index in its unit. */
enum { C_kind, C_lo, C_hi, C_index, CONSTS };
/**
 * Per unit (all u32): where its entries are in `recs` and `refs`; its
 * compiler and directory, each a text in `text`; its entries' names and
 * linkage names, each a text in `text` (one string per entry, separated by
 * NULs, empty for none); its constants in `constList`.
 */
enum {
  U_off, U_version, U_split, U_code, U_first, U_count, U_producer, U_producerLen, U_compDir, U_compDirLen,
  U_names, U_namesLen, U_linkages, U_linkagesLen, U_constFirst, U_constCount, UNIT_FIELDS,
};

static Vec recs, refs, places, units;         // recs, refs: doubles; the others u32
static Vec text, constList;                  // u8; u32
static Vec refIndexes;                       // i32, 3 per entry
static Vec stack;   // per open level: opener, parent, in a body (i32 each)
static Vec pending; // strings given by index: entry (or -1: the unit), attribute, index

static const double NaN = __builtin_nan("");

typedef struct {
  Reader r;
  u32 unitStart, first, addrSize, strBase;
  u32 *unit;
  const u8 *strOffsets;
  u32 strOffsetsLen;
  /** .debug_str and .debug_line_str, for the texts of names. */
  const u8 *str, *lineStr;
  u32 strLen, lineStrLen;
  int err;
  /** The unit's compiler and directory: a string's place each (kind, offset). */
  u32 producer[2], compDir[2];
} Scan;

static void fail(Scan *s, int code, u32 detail) {
  if (!s->err) {
    s->err = code;
    error_detail = detail;
  }
}

static void skip_form(Scan *s, u32 form, u32 addrSize) {
  Reader *r = &s->r;
  while (form == 0x16 && !r->bad) form = (u32)uleb(r); // indirect: the form comes first
  switch (form) {
    case 0x01: skip(r, addrSize); return; // addr
    case 0x03: skip(r, uN(r, 2)); return; // block2
    case 0x04: skip(r, uN(r, 4)); return; // block4
    case 0x09: case 0x18: skip(r, uleb(r)); return; // block, exprloc
    case 0x0a: skip(r, u8at(r)); return; // block1
    case 0x08: // string
      while (u8at(r) && !r->bad);
      return;
    case 0x0d: case 0x0f: case 0x15: case 0x1a: case 0x1b: case 0x22: case 0x23: uleb(r); return; // LEB128s
    default: {
      int size = fixed_size(form);
      if (size < 0) fail(s, E_FORM, form);
      else skip(r, (u64)size);
    }
  }
}

/** A reference as an absolute offset in .debug_info; NaN for any other form (a type signature). */
static double read_ref(Scan *s, u32 form) {
  Reader *r = &s->r;
  switch (form) {
    case 0x13: return (double)s->unitStart + uN(r, 4); // ref4
    case 0x11: return (double)s->unitStart + u8at(r); // ref1
    case 0x12: return (double)s->unitStart + uN(r, 2); // ref2
    case 0x14: return (double)s->unitStart + (double)u64at(r); // ref8
    case 0x15: return (double)s->unitStart + (double)uleb(r); // ref_udata
    case 0x10: return uN(r, 4); // ref_addr: already absolute
    default: skip_form(s, form, 8); return NaN;
  }
}

/** A constant as a number (data forms unsigned, sdata signed); NaN for a form that is no constant. */
static double read_num(Scan *s, u32 form, const Spec *spec) {
  Reader *r = &s->r;
  switch (form) {
    case 0x0b: return u8at(r); // data1
    case 0x05: return uN(r, 2); // data2
    case 0x06: return uN(r, 4); // data4
    case 0x07: return (double)u64at(r); // data8
    case 0x0f: return (double)uleb(r); // udata
    case 0x0d: return (double)sleb(r); // sdata
    case 0x21: return (double)spec->implicit; // implicit_const
    case 0x17: return uN(r, 4); // sec_offset (DW_AT_str_offsets_base)
    default: skip_form(s, form, 8); return NaN;
  }
}

/** DW_AT_const_value of entry `idx` exactly, onto `constList`; nothing for a block or a string. */
static void read_const(Scan *s, u32 form, const Spec *spec, int idx) {
  Reader *r = &s->r;
  u64 v;
  u32 kind = 1;
  switch (form) {
    case 0x0b: v = u8at(r); break;
    case 0x05: v = uN(r, 2); break;
    case 0x06: v = uN(r, 4); break;
    case 0x07: v = u64at(r); break;
    case 0x0f: v = uleb(r); break;
    case 0x0d: v = (u64)sleb(r); kind = 2; break;
    case 0x21: v = (u64)spec->implicit; kind = 2; break;
    default: skip_form(s, form, 8); return;
  }
  if (!vec_room(&constList, CONSTS)) { fail(s, E_MEMORY, 0); return; }
  u32 *c = &((u32 *)constList.data)[constList.n];
  c[C_kind] = kind;
  c[C_lo] = (u32)v;
  c[C_hi] = (u32)(v >> 32);
  c[C_index] = (u32)idx;
  constList.n += CONSTS;
}

/** A flag as 1 or 0. */
static double read_flag(Scan *s, u32 form) {
  if (form == 0x19) return 1; // flag_present
  if (form == 0x0c || form == 0x0b) return u8at(&s->r) != 0; // flag (data1 from old producers)
  skip_form(s, form, s->addrSize);
  return 0;
}

static int is_block(u32 form) { return form == 0x18 || form == 0x09 || form == 0x0a || form == 0x03 || form == 0x04; }

/** A place given as an expression: DW_OP_plus_uconst N (member offsets, with `plus`) or DW_OP_constu N; NaN otherwise. */
static double offset_expr(Scan *s, u32 form, int plus) {
  Reader *r = &s->r;
  u64 n = form == 0x0a ? u8at(r) : form == 0x03 ? uN(r, 2) : form == 0x04 ? uN(r, 4) : uleb(r);
  u32 start = r->p;
  skip(r, n);
  if (r->bad || n < 2) return NaN;
  u8 op = r->b[start];
  if (op != OP_constu && !(plus && op == OP_plus_uconst)) return NaN;
  Reader in = {r->b, start + 1, start + (u32)n, 0};
  u64 v = uleb(&in);
  return in.bad ? NaN : (double)v;
}

/** A string attribute's place: of the entry (`idx`, unit-relative) or, for the compiler and directory, of its unit. */
static void set_string(Scan *s, u32 idx, u32 attr, u32 kind, u32 off) {
  if (attr == AT_name || attr == AT_linkageName || attr == AT_mipsLinkageName) {
    u32 *p = &((u32 *)places.data)[(usize)(s->first + idx) * PLACES];
    int link = attr != AT_name;
    p[link ? P_linkageKind : P_nameKind] = kind;
    p[link ? P_linkage : P_name] = off;
  } else if (attr == AT_producer || attr == AT_compDir) {
    u32 *place = attr == AT_producer ? s->producer : s->compDir;
    place[0] = kind;
    place[1] = off;
  }
}

static void read_str(Scan *s, u32 idx, u32 attr, u32 form) {
  Reader *r = &s->r;
  u32 index;
  switch (form) {
    case 0x0e: { u32 off = uN(r, 4); set_string(s, idx, attr, STR_str, off); return; } // strp
    case 0x1f: { u32 off = uN(r, 4); set_string(s, idx, attr, STR_lineStr, off); return; } // line_strp
    case 0x08: { // string
      u32 off = r->p;
      while (u8at(r) && !r->bad);
      set_string(s, idx, attr, STR_info, off);
      return;
    }
    case 0x1a: index = (u32)uleb(r); break; // strx
    case 0x25: index = u8at(r); break; // strx1
    case 0x26: index = uN(r, 2); break; // strx2
    case 0x27: index = uN(r, 3); break; // strx3
    case 0x28: index = uN(r, 4); break; // strx4
    default: skip_form(s, form, s->addrSize); return;
  }
  // Given by index: resolved at the unit's end, once its DW_AT_str_offsets_base is known.
  if (!vec_room(&pending, 3)) { fail(s, E_MEMORY, 0); return; }
  u32 *q = &((u32 *)pending.data)[pending.n];
  q[0] = idx;
  q[1] = attr;
  q[2] = index;
  pending.n += 3;
}

/** A new entry, its other fields NaN (or none); its index in the unit. */
static int add_entry(Scan *s, u32 off, u32 tag, int parent, int full) {
  if (!vec_room(&recs, VALUES) || !vec_room(&refs, REFS) || !vec_room(&places, PLACES)) {
    fail(s, E_MEMORY, 0);
    return -1;
  }
  u32 g = recs.n / VALUES;
  int i = (int)(g - s->first);
  double *rec = &((double *)recs.data)[recs.n];
  for (int k = 0; k < VALUES; k++) rec[k] = NaN;
  rec[S_tag] = tag;
  rec[S_parent] = parent;
  rec[S_end] = i + 1;
  rec[S_full] = full ? 1 : 0;
  double *ref = &((double *)refs.data)[refs.n];
  ref[R_off] = off;
  ref[R_type] = ref[R_origin] = ref[R_containingType] = NaN;
  u32 *p = &((u32 *)places.data)[places.n];
  for (int k = 0; k < PLACES; k++) p[k] = 0;
  recs.n += VALUES;
  refs.n += REFS;
  places.n += PLACES;
  return i;
}

/** A kept entry's attributes into its record. */
static void read_attributes(Scan *s, const Abbrev *ab, int idx) {
  Reader *r = &s->r;
  usize g = (usize)s->first + (usize)idx;
  double *rec = &((double *)recs.data)[g * VALUES];
  double *ref = &((double *)refs.data)[g * REFS];
  for (u32 i = 0; i < ab->nspecs && !s->err && !r->bad; i++) {
    const Spec *spec = &ab->specs[i];
    if (spec->act == A_skip) {
      skip_form(s, spec->form, s->addrSize);
      continue;
    }
    u32 form = spec->form;
    while (form == 0x16 && !r->bad) form = (u32)uleb(r); // indirect: the form comes first
    switch (spec->act) {
      case A_str: read_str(s, (u32)idx, spec->attr, form); break;
      case A_type: ref[R_type] = read_ref(s, form); break;
      case A_origin: ref[R_origin] = read_ref(s, form); break;
      case A_containingType: ref[R_containingType] = read_ref(s, form); break;
      case A_byteSize: rec[S_byteSize] = read_num(s, form, spec); break;
      case A_bitSize: rec[S_bitSize] = read_num(s, form, spec); break;
      case A_dataBitOffset: rec[S_dataBitOffset] = read_num(s, form, spec); break;
      case A_bitOffset: rec[S_bitOffset] = read_num(s, form, spec); break;
      case A_upperBound: rec[S_upperBound] = read_num(s, form, spec); break;
      case A_count: rec[S_count] = read_num(s, form, spec); break;
      case A_virtuality: rec[S_virtuality] = read_num(s, form, spec); break;
      case A_declLine: rec[S_declLine] = read_num(s, form, spec); break;
      case A_memberOffset: rec[S_memberOffset] = is_block(form) ? offset_expr(s, form, 1) : read_num(s, form, spec); break;
      case A_vtableElem: { // DW_OP_constu N (gcc, clang); a constant in older producers
        double v = is_block(form) ? offset_expr(s, form, 0) : read_num(s, form, spec);
        rec[S_vtableElem] = v != v ? 0 : v;
        break;
      }
      case A_constValue: read_const(s, form, spec, idx); break;
      case A_external: rec[S_external] = read_flag(s, form); break;
      case A_declaration: rec[S_declaration] = read_flag(s, form); break;
      case A_concrete: skip_form(s, form, s->addrSize); rec[S_concrete] = 1; break;
      case A_split: skip_form(s, form, s->addrSize); s->unit[U_split] = 1; break;
      case A_strOffsetsBase: {
        double v = read_num(s, form, spec);
        if (v == v) s->strBase = (u32)v;
        break;
      }
      default: skip_form(s, form, s->addrSize);
    }
  }
}

/** Past an entry that is not kept; its DW_AT_sibling when all it holds can be stepped over too (else NaN). */
static double step_over(Scan *s, const Abbrev *ab, int typesOnly) {
  double next = NaN;
  if (ab->sibling >= 0 && (ab->prune == 1 || (typesOnly && ab->prune == 2))) {
    for (u32 i = 0; i < ab->nspecs && !s->err; i++) {
      if ((int)i == ab->sibling) next = read_ref(s, ab->specs[i].form);
      else skip_form(s, ab->specs[i].form, s->addrSize);
    }
  } else if (ab->fixed >= 0) skip(&s->r, (u64)ab->fixed + (u64)ab->addrs * s->addrSize);
  else for (u32 i = 0; i < ab->nspecs && !s->err; i++) skip_form(s, ab->specs[i].form, s->addrSize);
  return next;
}

static int is_class(double tag) { return tag == TAG_structure || tag == TAG_class || tag == TAG_union; }

static int push_level(Scan *s, int opener, int parent, int body) {
  if (!vec_room(&stack, 3)) { fail(s, E_MEMORY, 0); return 0; }
  int *l = &((int *)stack.data)[stack.n];
  l[0] = opener;
  l[1] = parent;
  l[2] = body;
  stack.n += 3;
  return 1;
}

/** The entries of one unit, from the reader's place up to `end`. */
static void read_entries(Scan *s, u32 end, const Table *t, int typesOnly) {
  Reader *r = &s->r;
  stack.n = 0;
  pending.n = 0;
  while (r->p < end && !s->err) {
    u32 at = r->p;
    u64 code = uleb(r);
    if (r->bad) break;
    if (code == 0) {
      if (stack.n) {
        stack.n -= 3;
        int opener = ((int *)stack.data)[stack.n];
        if (opener >= 0) ((double *)recs.data)[(usize)(s->first + opener) * VALUES + S_end] = recs.n / VALUES - s->first;
      }
      continue;
    }
    const Abbrev *ab = code < t->n ? t->byCode[code] : 0;
    if (!ab) { fail(s, E_ABBREV, (u32)code); return; }
    u32 depth = stack.n / 3;
    const int *top = depth ? &((int *)stack.data)[stack.n - 3] : 0;
    int parent = top ? top[1] : -1;
    int body = top ? top[2] : 0;
    if (ab->concrete) s->unit[U_code] = 1;
    int parentIsClass = parent >= 0 && is_class(((double *)recs.data)[(usize)(s->first + parent) * VALUES + S_tag]);
    if (ab->unread || (typesOnly && ((body && ab->body) || (ab->symbol && !parentIsClass)))) {
      // Read past it; its children belong to its parent, unless none of
      // them is read: then they are stepped over at once, to its sibling.
      double next = step_over(s, ab, typesOnly);
      if (next > r->p && next <= end) {
        r->p = (u32)next;
        continue;
      }
      if (ab->children && !push_level(s, -1, parent, body || ab->opens)) return;
      continue;
    }
    int idx = add_entry(s, at, ab->tag, parent, ab->full);
    if (idx < 0) return;
    read_attributes(s, ab, idx);
    if (ab->children && !push_level(s, idx, idx, ab->opens)) return;
  }
  if (r->bad) fail(s, E_TRUNCATED, 0);
  for (u32 k = 0; k < pending.n && !s->err; k += 3) {
    const u32 *q = &((u32 *)pending.data)[k];
    u64 at = (u64)s->strBase + (u64)q[2] * 4;
    if (!s->strOffsets || at + 4 > s->strOffsetsLen) continue;
    Reader so = {s->strOffsets, (u32)at, s->strOffsetsLen, 0};
    set_string(s, q[0], q[1], STR_str, uN(&so, 4));
  }
}

/** The string at a place, appended to `text` (nothing for none, or a place outside its section). */
static int append_string(Scan *s, u32 kind, u32 off) {
  const u8 *b = kind == STR_str ? s->str : kind == STR_lineStr ? s->lineStr : kind == STR_info ? s->r.b : 0;
  u32 len = kind == STR_str ? s->strLen : kind == STR_lineStr ? s->lineStrLen : kind == STR_info ? s->r.len : 0;
  if (!b || off >= len) return 1;
  u32 end = off;
  while (end < len && b[end]) end++;
  if (!vec_room(&text, end - off)) return 0;
  memcpy(text.data + text.n, b + off, end - off);
  text.n += end - off;
  return 1;
}

/** One text of the unit's names (`which`: P_nameKind or P_linkageKind), its start and length into the unit's fields. */
static void unit_names(Scan *s, u32 *u, int which, int field) {
  u32 start = text.n;
  for (u32 i = 0; i < u[U_count] && !s->err; i++) {
    const u32 *p = &((u32 *)places.data)[(usize)(u[U_first] + i) * PLACES];
    if (i && !vec_room(&text, 1)) { fail(s, E_MEMORY, 0); return; }
    if (i) text.data[text.n++] = 0;
    if (p[which] && !append_string(s, p[which], p[which + 1])) fail(s, E_MEMORY, 0);
  }
  u[field] = start;
  u[field + 1] = text.n - start;
}

/**
 * Each entry's references (type, origin, containing type) as indexes of the
 * unit's entries: -1 for an entry not kept (or of another unit), -2 for no
 * reference. Two builds' units compare by these, not by offsets, which move.
 */
static void unit_ref_indexes(Scan *s, const u32 *u) {
  if (!vec_room(&refIndexes, u[U_count] * 3)) { fail(s, E_MEMORY, 0); return; }
  const double *ref = &((double *)refs.data)[(usize)u[U_first] * REFS];
  int *out = &((int *)refIndexes.data)[refIndexes.n];
  for (u32 i = 0; i < u[U_count]; i++) {
    for (int k = 1; k < REFS; k++) {
      double target = ref[i * REFS + k];
      int found = -2;
      if (target == target) {
        // The entries' own offsets ascend: a binary search.
        found = -1;
        u32 lo = 0, hi = u[U_count];
        while (lo < hi) {
          u32 mid = lo + (hi - lo) / 2;
          double o = ref[mid * REFS + R_off];
          if (o == target) { found = (int)mid; break; }
          if (o < target) lo = mid + 1;
          else hi = mid;
        }
      }
      out[i * 3 + k - 1] = found;
    }
  }
  refIndexes.n += u[U_count] * 3;
}

/** A string of the unit (`place`: kind, offset) as a text in `text`: its start and length into the unit's fields. */
static void unit_string(Scan *s, u32 *u, const u32 *place, int field) {
  u[field] = text.n;
  if (place[0] && !append_string(s, place[0], place[1])) fail(s, E_MEMORY, 0);
  u[field + 1] = text.n - u[field];
}

/** What JavaScript reads of a unit besides its records and constants: its strings as texts, its references as indexes. */
static void finish_unit(Scan *s, u32 *u) {
  unit_ref_indexes(s, u);
  unit_string(s, u, s->producer, U_producer);
  unit_string(s, u, s->compDir, U_compDir);
  unit_names(s, u, P_nameKind, U_names);
  unit_names(s, u, P_linkageKind, U_linkages);
  u[U_constCount] = constList.n / CONSTS - u[U_constFirst];
}

/**
 * Every unit of a .debug_info (relocated already), with `typesOnly` as
 * dwarf.ts describes it. Returns the number of units, or a negative error;
 * `result` says where the tables are.
 */
EXPORT("scan") int scan(const u8 *info, u32 infoLen, const u8 *abbrev, u32 abbrevLen, const u8 *strOffsets, u32 strOffsetsLen,
                        const u8 *str, u32 strLen, const u8 *lineStr, u32 lineStrLen, int typesOnly) {
  tables = (Vec){0, 0, 0, sizeof(Table)};
  recs = (Vec){0, 0, 0, sizeof(double)};
  refs = (Vec){0, 0, 0, sizeof(double)};
  places = (Vec){0, 0, 0, sizeof(u32)};
  units = (Vec){0, 0, 0, sizeof(u32)};
  stack = (Vec){0, 0, 0, sizeof(int)};
  pending = (Vec){0, 0, 0, sizeof(u32)};
  text = (Vec){0, 0, 0, 1};
  constList = (Vec){0, 0, 0, sizeof(u32)};
  refIndexes = (Vec){0, 0, 0, sizeof(int)};
  Scan s = {.r = {info, 0, infoLen, 0}, .addrSize = 8, .strBase = 8, .strOffsets = strOffsets, .strOffsetsLen = strOffsetsLen,
            .str = str, .lineStr = lineStr, .strLen = strLen, .lineStrLen = lineStrLen};
  Reader *r = &s.r;
  while (r->p + 11 < infoLen && !s.err) {
    u32 unitStart = r->p;
    u32 len = uN(r, 4);
    if (len == 0xffffffff) return E_DWARF64;
    if (len > infoLen - r->p) return E_TRUNCATED;
    u32 end = r->p + len;
    u32 version = uN(r, 2);
    u32 abbrevOff, split = 0;
    if (version >= 5) {
      u32 unitType = u8at(r);
      s.addrSize = u8at(r);
      abbrevOff = uN(r, 4);
      if (unitType == 2 || unitType == 6) skip(r, 12); // type units: signature, type offset
      else if (unitType == 4 || unitType == 5) {
        skip(r, 8); // skeleton/split: dwo id
        split = 1;
      }
    } else {
      abbrevOff = uN(r, 4);
      s.addrSize = u8at(r);
    }
    if (r->bad) return E_TRUNCATED;
    int err = 0;
    const Table *t = abbrevs(abbrev, abbrevLen, abbrevOff, &err);
    if (!t) return err;
    if (!vec_room(&units, UNIT_FIELDS)) return E_MEMORY;
    u32 *u = &((u32 *)units.data)[units.n];
    units.n += UNIT_FIELDS;
    for (int k = 0; k < UNIT_FIELDS; k++) u[k] = 0;
    u[U_off] = unitStart;
    u[U_version] = version;
    u[U_split] = split;
    u[U_first] = recs.n / VALUES;
    u[U_constFirst] = constList.n / CONSTS;
    s.unit = u;
    s.unitStart = unitStart;
    s.first = u[U_first];
    s.strBase = 8; // past the .debug_str_offsets header of the only contribution
    s.producer[0] = s.compDir[0] = 0;
    read_entries(&s, end, t, typesOnly);
    // `units` may have moved while growing: the unit's fields are found again.
    u = &((u32 *)units.data)[units.n - UNIT_FIELDS];
    u[U_count] = recs.n / VALUES - u[U_first];
    finish_unit(&s, u);
    r->p = end;
  }
  if (s.err) return s.err;
  return (int)(units.n / UNIT_FIELDS);
}

static u32 out[8];

/** Where the last scan's tables are: units, recs, refs, text, constList (pointers); the number of entries; an error's detail; refIndexes. */
EXPORT("result") u32 *result(void) {
  out[0] = (u32)(usize)units.data;
  out[1] = (u32)(usize)recs.data;
  out[2] = (u32)(usize)refs.data;
  out[3] = (u32)(usize)text.data;
  out[4] = (u32)(usize)constList.data;
  out[5] = recs.n / VALUES;
  out[6] = error_detail;
  out[7] = (u32)(usize)refIndexes.data;
  return out;
}

/**
 * The 32-bit relocations of an object file's RELA table applied to `data`
 * (a debug section): only their low 32 bits matter. 64-bit ones are addresses
 * (DW_AT_low_pc, DW_OP_addr), which no user reads: left as they are. Symbols
 * here are sections of the same object (values 0) plus small addends.
 */
EXPORT("relocate") void relocate(u8 *data, u32 len, const u8 *rela, u32 relaLen, const u8 *symtab, u32 symLen) {
  Reader r = {rela, 0, relaLen, 0};
  Reader st = {symtab, 0, symLen, 0};
  for (u32 o = 0; o + 24 <= relaLen; o += 24) {
    r.p = o;
    u32 at = uN(&r, 4);
    u32 atHigh = uN(&r, 4);
    u32 type = uN(&r, 4);
    u32 sym = uN(&r, 4);
    u32 addend = uN(&r, 4);
    if (type != R_X86_64_32 && type != R_X86_64_32S) continue;
    if (atHigh != 0 || at > len || len - at < 4 || sym > symLen / 24 - 1 || symLen < 24) continue; // outside the section
    st.p = sym * 24 + 8;
    u32 v = uN(&st, 4) + addend;
    data[at] = (u8)v;
    data[at + 1] = (u8)(v >> 8);
    data[at + 2] = (u8)(v >> 16);
    data[at + 3] = (u8)(v >> 24);
  }
}
