#!/usr/bin/env node
// The package a user installs: `npm install -g @hotload/hotload`.
//
// The workspace's seven packages are private; this script lays out one
// publishable package from their builds and packs it (npm pack):
//   package.json              name, bin, files, engines, os, cpu, the
//                             third-party dependencies (yargs, ffi-rs, elfy)
//   bin/hotload.js            the CLI
//   packages/<name>/dist/     each package's compiled JavaScript (tests left
//                             out), requires of @hotload/<name> made relative
//   packages/<name>/package.json
//   include/hotload.h         the header patches are written with
//   native-shim/shim.c        the shim's source: built on first use with the
//   native-shim/build/        system compiler where the prebuilt one (x86-64,
//     libhotload-shim.so      glibc 2.34 or later) does not load
//     libhotload-debug.so     the GDB JIT descriptor attach loads into a process
//                             (debug-descriptor.c), so debuggers see patches
//                             made from a rebuild
//   packages/elf/wasm/build/
//     dwarf-scan.wasm         the DWARF reader's loop (dwarf-scan.c), the same
//                             on every machine
//   README.md
// The layout mirrors the checkout, so paths found from __dirname hold in both.
//
// Usage: node scripts/pack.js <out-dir>   (run after `make build`); prints
// the tarball's path.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const out = path.resolve(process.argv[2] || path.join(root, 'build/npm'));
const NAME = '@hotload/hotload';
const PACKAGES = ['errors', 'x86', 'elf', 'patch', 'injector', 'api', 'cli'];

const cli = JSON.parse(fs.readFileSync(path.join(root, 'packages/cli/package.json'), 'utf8'));
const stage = path.join(out, 'package');
fs.rmSync(stage, { recursive: true, force: true });
fs.mkdirSync(stage, { recursive: true });

// Third-party dependencies of the packages, with their ranges.
const deps = {};
for (const p of PACKAGES) {
  const pj = JSON.parse(fs.readFileSync(path.join(root, 'packages', p, 'package.json'), 'utf8'));
  for (const [d, v] of Object.entries(pj.dependencies || {})) if (!d.startsWith('@hotload/') && !d.startsWith('@types/')) deps[d] = v;
}

/** Copy a package's dist, rewriting `require("@hotload/x")` to the relative path of x's dist. */
function copyDist(p) {
  const from = path.join(root, 'packages', p, 'dist');
  if (!fs.existsSync(from)) throw new Error(`packages/${p}/dist is missing: run \`make build\` first`);
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const src = path.join(dir, e.name);
      const rel = path.relative(from, src);
      if (e.isDirectory()) {
        walk(src);
        continue;
      }
      if (/\.test\.(js|d\.ts)$/.test(e.name) || e.name.endsWith('.map') || e.name.endsWith('.tsbuildinfo')) continue;
      const dst = path.join(stage, 'packages', p, 'dist', rel);
      fs.mkdirSync(path.dirname(dst), { recursive: true });
      let text = fs.readFileSync(src, 'utf8');
      text = text.replace(/(require\(|from\s+|import\()(["'])@hotload\/([a-z0-9-]+)\2/g, (_m, pre, q, name) => {
        let r = path.relative(path.dirname(dst), path.join(stage, 'packages', name, 'dist'));
        if (!r.startsWith('.')) r = `./${r}`;
        return `${pre}${q}${r}${q}`;
      });
      text = text.replace(/\n\/\/# sourceMappingURL=.*$/, '\n');
      fs.writeFileSync(dst, text);
    }
  };
  walk(from);
  const pj = JSON.parse(fs.readFileSync(path.join(root, 'packages', p, 'package.json'), 'utf8'));
  fs.writeFileSync(path.join(stage, 'packages', p, 'package.json'), JSON.stringify({ name: pj.name, version: cli.version, private: true, main: pj.main }, null, 2) + '\n');
}
for (const p of PACKAGES) copyDist(p);

fs.mkdirSync(path.join(stage, 'bin'));
fs.writeFileSync(path.join(stage, 'bin/hotload.js'), "#!/usr/bin/env node\n'use strict';\nrequire('../packages/cli/dist/index.js').main(process.argv.slice(2));\n", { mode: 0o755 });
fs.mkdirSync(path.join(stage, 'include'));
fs.copyFileSync(path.join(root, 'include/hotload.h'), path.join(stage, 'include/hotload.h'));
fs.mkdirSync(path.join(stage, 'native-shim/build'), { recursive: true });
fs.copyFileSync(path.join(root, 'native-shim/shim.c'), path.join(stage, 'native-shim/shim.c'));
const shim = path.join(root, 'native-shim/build/libhotload-shim.so');
if (!fs.existsSync(shim)) throw new Error('native-shim/build/libhotload-shim.so is missing: run `make build` first');
fs.copyFileSync(shim, path.join(stage, 'native-shim/build/libhotload-shim.so'));
// The GDB JIT descriptor hotload loads into patched processes (no C library: the prebuilt one serves every x86-64 system).
const debugLib = path.join(root, 'native-shim/build/libhotload-debug.so');
if (!fs.existsSync(debugLib)) throw new Error('native-shim/build/libhotload-debug.so is missing: run `make build` first');
fs.copyFileSync(path.join(root, 'native-shim/debug-descriptor.c'), path.join(stage, 'native-shim/debug-descriptor.c'));
fs.copyFileSync(debugLib, path.join(stage, 'native-shim/build/libhotload-debug.so'));
// The DWARF reader's WebAssembly (a binary: copied as it is, not as the dist's text).
const scan = path.join(root, 'packages/elf/wasm/build/dwarf-scan.wasm');
if (!fs.existsSync(scan)) throw new Error('packages/elf/wasm/build/dwarf-scan.wasm is missing: run `make build` first');
fs.mkdirSync(path.join(stage, 'packages/elf/wasm/build'), { recursive: true });
fs.copyFileSync(scan, path.join(stage, 'packages/elf/wasm/build/dwarf-scan.wasm'));
fs.copyFileSync(path.join(root, 'README.md'), path.join(stage, 'README.md'));

// An ES module entry beside the CommonJS one: the API's names, listed from
// the built module itself, so `import { attach } from '@hotload/hotload'`
// works without relying on Node's guess of a CommonJS module's exports.
const apiNames = Object.keys(require(path.join(root, 'packages/api/dist/index.js'))).filter((n) => n !== 'default' && n !== '__esModule');
fs.writeFileSync(
  path.join(stage, 'packages/api/dist/index.mjs'),
  `// The ES module entry of @hotload/hotload: the CommonJS API, by name.\nimport api from './index.js';\nexport const { ${apiNames.join(', ')} } = api;\nexport default api;\n`,
);

const manifest = {
  name: NAME,
  version: cli.version,
  description: 'Live-patch running native (C and C++) processes on Linux x86-64: a changed function runs without a restart',
  license: 'MIT',
  keywords: ['live-patching', 'hot-reload', 'ptrace', 'elf', 'c', 'c++'],
  bin: { hotload: 'bin/hotload.js' },
  main: 'packages/api/dist/index.js',
  types: 'packages/api/dist/index.d.ts',
  exports: {
    '.': { types: './packages/api/dist/index.d.ts', import: './packages/api/dist/index.mjs', require: './packages/api/dist/index.js' },
    './package.json': './package.json',
  },
  files: ['bin/', 'packages/', 'include/', 'native-shim/', 'README.md'],
  engines: { node: '>=20' },
  os: ['linux'],
  cpu: ['x64'],
  dependencies: deps,
};
fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');

const tgz = execFileSync('npm', ['pack', '--silent', '--pack-destination', out], { cwd: stage, encoding: 'utf8' }).trim().split('\n').pop();
fs.rmSync(stage, { recursive: true, force: true }); // the tarball is the package
console.log(path.join(out, tgz));
