// --profile: what a backend does during a measurement window, from perf stat and strace.
import { execFile } from 'node:child_process';

function runTool(cmd: string, args: string[], timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (error, stdout, stderr) =>
      resolve(`${stdout}${stderr}`.trim() || (error ? String(error.message) : '')));
  });
}

/** perf stat of a backend during the measurement window: CPU, context switches and system calls (a kernel counter, no ptrace), per thread. */
export function perfDuring(pid: number, seconds: number): Promise<string> {
  return runTool('perf', ['stat', '--per-thread', '-e', 'task-clock,context-switches,raw_syscalls:sys_enter', '-p', String(pid), '--', 'sleep', String(seconds)]);
}

/** strace -c -f of a backend under load, after the window (ptrace slows it): which system calls. */
export async function straceAfter(pid: number): Promise<string> {
  const text = await runTool('timeout', ['-s', 'INT', '2', 'strace', '-c', '-f', '-p', String(pid)]);
  return text.split('\n').filter((l) => !/^strace: Process \d+ (attached|detached)/.test(l)).join('\n');
}
