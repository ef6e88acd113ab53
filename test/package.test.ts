import { test } from 'uvu';
import * as assert from 'uvu/assert';

test('the package root resolves to the built entry point, for require and for import', async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const viaRequire = require('vhost-tap') as typeof import('../src');
  assert.type(viaRequire.Tap.create, 'function');
  // A real dynamic import (tsc would turn `import()` into require under commonjs).
  const importer = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<typeof import('../src')>;
  const viaImport = await importer('vhost-tap');
  assert.is(viaImport.Tap, viaRequire.Tap);
  assert.type(viaImport.sendTapQueues, 'function');
  assert.ok(require.resolve('vhost-tap').endsWith('dist/src/index.js'));
});

test.run();
