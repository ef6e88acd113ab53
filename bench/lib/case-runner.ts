// The bench's cases each run in a child (bench/case.ts), so that one that crashes or
// hangs costs that case only: the child prints one RESULT or ERROR line.
import path from 'node:path';

import { Netns } from '../../harness/netns';
import { tail } from '../../harness/tools';

/** bench/case.ts, compiled beside this file's folder. */
export const CASE_JS = path.join(__dirname, '..', 'case.js');

/** Runs one case in a child; `cpus` confines the whole child (taskset) to those CPUs. */
export async function runCase<T>(ns: Netns, spec: object, timeoutMs: number, cpus?: string): Promise<T> {
  const argv = [process.execPath, CASE_JS, JSON.stringify(spec)];
  const r = await (cpus === undefined ? ns.run(argv[0]!, argv.slice(1), { timeoutMs }) : ns.run('taskset', ['-c', cpus, ...argv], { timeoutMs }));
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT ') || l.startsWith('ERROR '));
  if (!line) {
    // The line that says what went wrong (an uncaught error's message, ERR_DLOPEN_FAILED...) first: the progress line shows only that.
    const out = r.stdout + r.stderr;
    const why = out.split('\n').find((l) => /\b\w*Error\b|\bERR_[A-Z_]+\b/.test(l))?.trim();
    throw new Error(`case exited (${r.code ?? r.signal}) without a result${why ? `: ${why}` : ''}: ${tail(out, 5)}`);
  }
  if (line.startsWith('ERROR ')) throw new Error(line.slice(6));
  return JSON.parse(line.slice(7)) as T;
}
