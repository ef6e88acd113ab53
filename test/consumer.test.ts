// The package as a VMM author gets it: `npm pack`, install the tarball into an
// empty project without network (the install builds the addon from the shipped
// sources with cmake-js), type-check the README's snippets against the installed
// declarations as CommonJS, ESM and bundler code, and run them in private
// namespaces. Also checks what the tarball carries.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { REPO_ROOT } from '../harness/repo';
import { assertPrivateNetns } from './helpers/system';

assertPrivateNetns();

interface PackedFile { path: string; size: number }
interface PackResult { filename: string; size: number; unpackedSize: number; entryCount: number; files: PackedFile[] }

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-tap-consumer-'));
const consumer = path.join(work, 'app');
let packed: PackResult;

/** The fenced ts block after `<!-- consumer-test:NAME -->` in the README. */
function readmeSnippet(name: string): string {
  const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const marker = `<!-- consumer-test:${name} -->\n\`\`\`ts\n`;
  const start = readme.indexOf(marker);
  assert.ok(start >= 0, `README.md has no snippet marked ${marker.trim()}`);
  const body = readme.slice(start + marker.length);
  return body.slice(0, body.indexOf('\n```\n') + 1);
}

function sh(cmd: string, args: string[], cwd: string, what: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 300_000 });
  assert.ok(r.status === 0, `${what} failed (${cmd} ${args.join(' ')}: exit ${r.status}, ${r.signal ?? ''}):\n${r.stdout}\n${r.stderr}`);
  return `${r.stdout}${r.stderr}`;
}

/** Runs a shell script in fresh network and mount namespaces with a private /run (a tmpfs). */
function inPrivateNamespaces(script: string, what: string): string {
  return sh('unshare', ['--net', '--mount', '--propagation', 'private', '--', 'sh', '-ec',
    `mount -t tmpfs tmpfs /run; ip link set lo up; ${script}`], consumer, what);
}

test.after(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

test('npm pack ships what a build needs, and no tests, bench code, source maps or build leftovers', () => {
  const out = sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], REPO_ROOT, 'npm pack');
  packed = (JSON.parse(out.slice(out.indexOf('['))) as PackResult[])[0]!;
  const files = packed.files.map((f) => f.path).sort();
  for (const needed of ['package.json', 'README.md', 'LICENSE', 'CMakeLists.txt', 'dist/src/index.js', 'dist/src/index.d.ts',
    'dist/src/cli/vhost-tap.js', 'native/addon/addon.cc', 'native/core/queue_pair_worker.cc']) {
    assert.ok(files.includes(needed), `the tarball has ${needed}`);
  }
  const unexpected = files.filter((f) => !(
    ['package.json', 'README.md', 'LICENSE', 'CMakeLists.txt'].includes(f) ||
    // The data path (native/core) and the Node-API addon around it; not native/tests or native/fuzz.
    /^native\/(core|addon)\/[a-z_]+\.(cc|h)$/.test(f) ||
    // The steering program: its committed bytecode (built in) and the C it is built from.
    /^native\/addon\/bpf\/(steering\.bpf\.c|steering_program\.h)$/.test(f) ||
    /^dist\/src\/.+\.(js|d\.ts)$/.test(f)));
  assert.equal(unexpected, [], 'nothing but the build inputs, the compiled library and the docs');
  assert.not.ok(files.some((f) => /bench/.test(f)), 'no bench code (bench/native/ is built only in a checkout)');
  // Every compiled file has its source: a stale dist/ would ship code nobody can read or build.
  const stale = files.filter((f) => f.startsWith('dist/src/'))
    .map((f) => f.replace(/^dist\//, '').replace(/\.d\.ts$|\.js$/, '.ts'))
    .filter((src) => !fs.existsSync(path.join(REPO_ROOT, src)));
  assert.equal(stale, [], 'no compiled file without its TypeScript source (rm -rf dist && npx tsc, then pack)');
  for (const dir of ['native/core', 'native/addon']) {
    for (const src of fs.readdirSync(path.join(REPO_ROOT, dir), { recursive: true }) as string[]) {
      if (fs.statSync(path.join(REPO_ROOT, dir, src)).isDirectory()) continue;
      assert.ok(files.includes(`${dir}/${src}`), `${dir}/${src} is shipped (the install builds every file there)`);
    }
  }
  assert.not.ok(files.some((f) => /^native\/(tests|fuzz)\//.test(f)), 'no C++ tests or fuzzers');
  // 250 kB: the packed ring and the steering program (its bytecode header) took it past 200 kB.
  assert.ok(packed.size < 250_000, `the tarball stays small: ${packed.size} bytes`);
  console.log(`    tarball ${packed.filename}: ${(packed.size / 1000).toFixed(1)} kB, ${packed.entryCount} files, ${(packed.unpackedSize / 1000).toFixed(0)} kB unpacked`);
});

test('the tarball installs without network into an empty project and builds its addon', () => {
  assert.ok(packed, 'packed by the previous test');
  const tarball = path.join(work, packed.filename);
  fs.mkdirSync(consumer);
  // As the README says for strict-allow-scripts: approve vhost-tap's install script (the build)
  // before installing; for a tarball npm keys the approval by its file: spec.
  fs.writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({
    name: 'vmm-consumer', version: '1.0.0', private: true, allowScripts: { [`file:${tarball}`]: true },
  }, null, 2));
  const started = Date.now();
  // --offline: the suite's namespace has no network anyway; scripts/test.sh warms npm's cache with
  // the package's dependencies before it enters the namespace.
  const log = sh('npm', ['install', '--offline', '--strict-allow-scripts', '--no-audit', '--no-fund', tarball], consumer,
    'npm install of the tarball (if ENOTCACHED: run `npm test`, which fills the npm cache first)');
  const addon = path.join(consumer, 'node_modules', 'vhost-tap', 'build', 'Release', 'vhost_tap.node');
  assert.ok(fs.existsSync(addon), `the install script built ${addon}:\n${log}`);
  const symbols = execFileSync('nm', ['-D', '--defined-only', addon], { encoding: 'utf8' });
  assert.not.match(symbols, /Bench/i, 'the installed addon has no bench code');
  const strings = fs.readFileSync(addon).toString('latin1');
  assert.not.ok(strings.includes('BenchLoop'), 'the installed addon registers no bench bindings');
  console.log(`    npm install --offline of the tarball, with the cmake-js build: ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

test('the README snippets type-check against the installed package as CommonJS, ESM and bundler code', () => {
  const src = path.join(consumer, 'src');
  fs.mkdirSync(src);
  const embed = readmeSnippet('embed');
  const serve = readmeSnippet('serve');
  for (const ext of ['cts', 'mts', 'ts']) {
    fs.writeFileSync(path.join(src, `embed.${ext}`), embed);
    fs.writeFileSync(path.join(src, `serve.${ext}`), serve);
  }
  const typeRoots = [path.join(REPO_ROOT, 'node_modules', '@types')];
  const common = { strict: true, target: 'ES2022', lib: ['ES2022'], types: ['node'], typeRoots, skipLibCheck: false };
  fs.writeFileSync(path.join(consumer, 'tsconfig.node16.json'), JSON.stringify({
    compilerOptions: { ...common, module: 'node16', moduleResolution: 'node16', outDir: 'out' },
    files: ['src/embed.cts', 'src/embed.mts', 'src/serve.cts', 'src/serve.mts'],
  }));
  fs.writeFileSync(path.join(consumer, 'tsconfig.nodenext.json'), JSON.stringify({
    compilerOptions: { ...common, module: 'nodenext', moduleResolution: 'nodenext', noEmit: true },
    files: ['src/embed.cts', 'src/embed.mts', 'src/serve.cts', 'src/serve.mts'],
  }));
  fs.writeFileSync(path.join(consumer, 'tsconfig.bundler.json'), JSON.stringify({
    compilerOptions: { ...common, module: 'esnext', moduleResolution: 'bundler', noEmit: true },
    files: ['src/embed.ts', 'src/serve.ts'],
  }));
  const tsc = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  for (const config of ['node16', 'nodenext', 'bundler']) {
    sh(process.execPath, [tsc, '-p', `tsconfig.${config}.json`], consumer, `tsc with moduleResolution ${config}`);
  }
  assert.match(fs.readFileSync(path.join(consumer, 'out', 'embed.cjs'), 'utf8'), /require\("vhost-tap"\)/, 'the .cts build requires the package');
  assert.match(fs.readFileSync(path.join(consumer, 'out', 'embed.mjs'), 'utf8'), /from 'vhost-tap'/, 'the .mts build imports the package');
});

test('the embedding snippet brings the device up on a tap and moves a frame, as CommonJS and as ESM', () => {
  for (const file of ['out/embed.cjs', 'out/embed.mjs']) {
    const out = inPrivateNamespaces(`${JSON.stringify(process.execPath)} ${file}`, `node ${file}`);
    assert.match(out, /vm0tap received [1-9]\d* frame\(s\) from the guest/, `${file} moved a frame:\n${out}`);
  }
});

test('the in-process daemon snippet answers a frontend on its socket and exits cleanly on SIGTERM', () => {
  const check = path.join(REPO_ROOT, 'test', 'fixtures', 'consumer', 'serve-check.cjs');
  for (const file of ['out/serve.cjs', 'out/serve.mjs']) {
    const out = inPrivateNamespaces(`${JSON.stringify(process.execPath)} ${JSON.stringify(check)} ${file} /run/vm1.sock`, `serve-check ${file}`);
    const seen = JSON.parse(out.trim().split('\n').pop()!) as { version1: boolean; socketRemoved: boolean; logged: string[]; exitMs: number };
    assert.ok(seen.version1, `${file}: GET_FEATURES offers VERSION_1: ${out}`);
    assert.ok(seen.socketRemoved, `${file}: the socket is removed at SIGTERM`);
    assert.ok(seen.logged.includes('listening') && seen.logged.includes('connected'), `${file}: logs through the snippet's logger: ${out}`);
  }
});

test.run();
