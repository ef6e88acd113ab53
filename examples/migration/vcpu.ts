// The guest's vCPU in these examples: a loop the VMM can pause between
// iterations (the guest then touches none of its memory) and resume.
export class PausableLoop {
  #paused = false;
  #stopped = false;
  #idle: (() => void) | undefined;
  readonly #done: Promise<void>;

  /** Runs `step` over and over until stop(). */
  constructor(step: () => Promise<void>) {
    this.#done = (async () => {
      while (!this.#stopped) {
        if (this.#paused) {
          this.#idle?.();
          await new Promise((resolve) => setTimeout(resolve, 1));
          continue;
        }
        await step();
      }
    })();
  }

  /** Resolves once the step under way has finished and no new one starts. */
  pause(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#idle = resolve;
      this.#paused = true;
    });
  }

  get paused(): boolean {
    return this.#paused;
  }

  resume(): void {
    this.#paused = false;
    this.#idle = undefined;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#done;
  }
}
