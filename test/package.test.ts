import fs from 'node:fs';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { REPO_ROOT } from '../harness/repo';

// A real dynamic import (tsc would turn `import()` into require under commonjs).
const importer = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<Record<string, unknown>>;

test('the package root resolves to the built entry point, for require and for import', async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const viaRequire = require('vhost-tap') as typeof import('../src');
  assert.type(viaRequire.Tap.create, 'function');
  const viaImport = await importer('vhost-tap');
  assert.is(viaImport.Tap, viaRequire.Tap);
  assert.type(viaImport.sendTapQueues, 'function');
  assert.ok(require.resolve('vhost-tap').endsWith('dist/src/index.js'));
});

test('ESM named imports give every name require() gives, as the same objects', async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const viaRequire = require('vhost-tap') as Record<string, unknown>;
  const viaImport = await importer('vhost-tap');
  const names = Object.keys(viaRequire).sort();
  // Node finds a CommonJS module's named exports by reading its source (cjs-module-lexer): a name
  // it cannot see is missing from `import { X } from 'vhost-tap'` even though require() has it.
  assert.equal(names.filter((n) => !(n in viaImport)), [], 'names require() has and import does not');
  for (const name of names) assert.is(viaImport[name], viaRequire[name], `${name} is the same object both ways`);
  for (const name of ['VirtioNetDevice', 'VhostUserServer', 'GuestMemory', 'Tap', 'VirtioNetGuest', 'makeError', 'errorCode', 'STATUS_DRIVER_OK']) {
    assert.ok(names.includes(name), `${name} is public`);
  }
});

test('nothing only for tests is public', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const names = Object.keys(require('vhost-tap') as Record<string, unknown>);
  for (const internal of ['native', 'VhostUserSession', 'VhostUserConnection', 'Request', 'encodeMessage', 'ControlQueue', 'NetConfigSpace']) {
    assert.not.ok(names.includes(internal), `${internal} is internal`);
  }
});

/** Module specifiers a TypeScript file imports or re-exports. */
function importsOf(file: string): string[] {
  const source = fs.readFileSync(file, 'utf8');
  return [...source.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'|\brequire\('([^']+)'\)|\bimport\('([^']+)'\)/gm)]
    .map((m) => m[1] ?? m[2] ?? m[3] ?? m[4]!);
}

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.join(e.parentPath ?? e.path, e.name));
}

test('the examples and the CLI import the library only through the package root', () => {
  const root = path.join(REPO_ROOT, 'src', 'index.ts');
  const checked: string[] = [];
  const offenders: string[] = [];
  for (const file of [...tsFiles(path.join(REPO_ROOT, 'examples')), ...tsFiles(path.join(REPO_ROOT, 'src', 'cli'))]) {
    const home = path.dirname(file);
    const own = file.includes(`${path.sep}examples${path.sep}`) ? path.join(REPO_ROOT, 'examples') : path.join(REPO_ROOT, 'src', 'cli');
    for (const spec of importsOf(file)) {
      checked.push(spec);
      if (spec.startsWith('node:') || spec === 'vhost-tap') continue;
      if (!spec.startsWith('.')) {
        offenders.push(`${path.relative(REPO_ROOT, file)}: '${spec}' (a package other than vhost-tap)`);
        continue;
      }
      const target = path.resolve(home, spec);
      const isRoot = [target, `${target}.ts`, path.join(target, 'index.ts')].includes(root);
      const staysHome = target.startsWith(own + path.sep);
      if (!isRoot && !staysHome) offenders.push(`${path.relative(REPO_ROOT, file)}: '${spec}'`);
    }
  }
  assert.ok(checked.length > 10, `the scan found the imports (${checked.length})`);
  assert.equal(offenders, [], 'imports that reach past the package root (import from src/index.ts, as a user imports from vhost-tap)');
});

test.run();
