// Waiting, for tests and the bench alike: a pause, a condition polled until it
// holds (or a value until it is right), and a promise given a deadline.

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every few ms until it holds; throws `timed out waiting for <what>` after timeoutMs. */
export async function until(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Reads a value every 50 ms until `ok` says it is right or timeoutMs passed; returns the last one read, right or not. */
export async function readUntil<T>(read: () => T, ok: (value: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let value = read();
  while (!ok(value) && Date.now() < end) {
    await sleep(50);
    value = read();
  }
  return value;
}

/** `p`, or a rejection `<what> timed out after <ms> ms` if it has not settled by then. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    p.then((v) => {
      clearTimeout(timer);
      resolve(v);
    }, (e: unknown) => {
      clearTimeout(timer);
      reject(e as Error);
    });
  });
}
