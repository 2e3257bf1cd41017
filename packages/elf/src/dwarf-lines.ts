// The files a module's DWARF line tables name (`.debug_line`): its sources
// and every header code or a type came from. watch asks which loaded modules
// used a saved file.

import * as path from 'path';
import { ElfFile } from './read-elf';
import { readUnits } from './dwarf';

/**
 * Every file a linked module's line tables name (`.debug_line`: its sources
 * and every header code or a type came from), as absolute paths. Unlike the
 * units' names these include the headers, which is what tells that a module
 * built straight from a source to a `.so`, with no object kept, used a saved
 * header. Read: DWARF 2-5 line program headers (32-bit DWARF; a table in a
 * form it does not know ends the reading, with what it has); the relative
 * directories of DWARF 4 and before are taken from their unit's comp dir
 * (units and line tables in the same order, as compilers and linkers write
 * them). Not for relocatable objects (their string offsets are not relocated here).
 */
export function lineTableFiles(elf: ElfFile): string[] {
  const sec = elf.section('.debug_line');
  if (!sec) return [];
  const data = elf.sectionContents(sec);
  const strOf = (name: string) => {
    const x = elf.section(name);
    return x ? elf.sectionContents(x) : undefined;
  };
  const lineStr = strOf('.debug_line_str');
  const str = strOf('.debug_str');
  const cstr = (buf: Buffer | undefined, at: number) => (buf && at < buf.length ? buf.toString('utf8', at, Math.max(at, buf.indexOf(0, at))) : '');
  let compDirs: string[] | undefined;
  const compDir = (k: number) => (compDirs ??= (() => {
    try {
      return readUnits(elf, true).map((u) => u.compDir);
    } catch {
      return [];
    }
  })())[k] ?? '';
  const out = new Set<string>();
  let pos = 0;
  for (let k = 0; pos + 4 <= data.length; k++) {
    const length = data.readUInt32LE(pos);
    if (length >= 0xfffffff0) break; // 64-bit DWARF: not read
    const next = pos + 4 + length;
    try {
      let at = pos + 4;
      const u8 = () => data[at++];
      const uleb = () => {
        let v = 0;
        let shift = 0;
        for (;;) {
          const b = data[at++];
          v += (b & 0x7f) * 2 ** shift;
          shift += 7;
          if (!(b & 0x80) || at >= next) return v;
        }
      };
      const str0 = () => {
        const end = data.indexOf(0, at);
        const s = data.toString('utf8', at, end);
        at = end + 1;
        return s;
      };
      const version = data.readUInt16LE(at);
      at += 2;
      if (version < 2 || version > 5) {
        pos = next;
        continue;
      }
      if (version >= 5) at += 2; // address_size, segment_selector_size
      at += 4; // header_length
      at += version >= 4 ? 2 : 1; // minimum_instruction_length (, maximum_operations_per_instruction)
      at += 3; // default_is_stmt, line_base, line_range
      const opcodeBase = u8();
      at += opcodeBase - 1;
      const dirs: string[] = [];
      const files: { name: string; dir: number }[] = [];
      if (version >= 5) {
        // Each entry is described by (content type, form) pairs: DW_LNCT_path 1, DW_LNCT_directory_index 2.
        const entries = (): { path: string; dir: number }[] => {
          const formats: [number, number][] = [];
          for (let n = u8(); n > 0; n--) formats.push([uleb(), uleb()]);
          const list: { path: string; dir: number }[] = [];
          for (let n = uleb(); n > 0; n--) {
            const e = { path: '', dir: 0 };
            for (const [type, form] of formats) {
              let v: string | number;
              switch (form) {
                case 0x08: v = str0(); break; // DW_FORM_string
                case 0x1f: v = cstr(lineStr, data.readUInt32LE(at)); at += 4; break; // DW_FORM_line_strp
                case 0x0e: v = cstr(str, data.readUInt32LE(at)); at += 4; break; // DW_FORM_strp
                case 0x0f: v = uleb(); break; // DW_FORM_udata
                case 0x0b: v = u8(); break; // DW_FORM_data1
                case 0x05: v = data.readUInt16LE(at); at += 2; break; // DW_FORM_data2
                case 0x06: v = data.readUInt32LE(at); at += 4; break; // DW_FORM_data4
                case 0x07: v = 0; at += 8; break; // DW_FORM_data8
                case 0x1e: v = 0; at += 16; break; // DW_FORM_data16 (an MD5)
                case 0x09: v = 0; at += uleb(); break; // DW_FORM_block
                default: throw new Error(`form 0x${form.toString(16)}`);
              }
              if (type === 1) e.path = String(v);
              else if (type === 2) e.dir = Number(v);
            }
            list.push(e);
          }
          return list;
        };
        dirs.push(...entries().map((d) => d.path));
        files.push(...entries().map((f) => ({ name: f.path, dir: f.dir })));
      } else {
        dirs.push(compDir(k)); // index 0: the unit's own directory
        for (let d = str0(); d; d = str0()) dirs.push(d);
        for (let f = str0(); f; f = str0()) {
          files.push({ name: f, dir: uleb() });
          uleb(); // mtime
          uleb(); // length
        }
      }
      const base = dirs[0] && path.isAbsolute(dirs[0]) ? dirs[0] : compDir(k);
      for (const f of files) {
        if (!f.name) continue;
        const dir = dirs[f.dir] ?? '';
        out.add(path.resolve(base || '/', dir, f.name));
      }
    } catch {
      break; // a header this reader does not know: what was read stands
    }
    pos = next;
  }
  return [...out];
}
