// The progress line of npm run bench: `[step/steps m:ss] label`, rewritten in place
// on a terminal, one line per step otherwise.
import os from 'node:os';

/** When the run started (this module is loaded first thing). */
export const started = Date.now();
export const loadAtStart = os.loadavg()[0]!.toFixed(2);
export const tty = process.stdout.isTTY === true;
let step = 0;
let steps = 0;

function elapsed(): string {
  const s = Math.round((Date.now() - started) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function progress(text: string): void {
  const line = `[${String(step).padStart(2)}/${steps} ${elapsed()}] ${text}`;
  if (tty) process.stdout.write(`\r\x1b[K${line.slice(0, (process.stdout.columns || 120) - 1)}`);
  else process.stdout.write(`${line}\n`);
}

export function setStepCount(count: number): void {
  steps = count;
}

/** The next step begins: its line. */
export function stepStarted(label: string): void {
  step++;
  progress(label);
}

export function endProgress(): void {
  if (tty) process.stdout.write('\r\x1b[K');
}

/** What a line printed during a step starts with: on a terminal, the erasure of the progress line. */
export function lineStart(): string {
  return tty ? '\r\x1b[K' : '';
}
