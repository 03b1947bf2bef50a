/** A counting semaphore: at most `n` holders at once, the rest wait in order. */
export class Semaphore {
  #free: number;
  #waiters: Array<() => void> = [];
  constructor(n: number) {
    this.#free = n;
  }
  async take(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((r) => this.#waiters.push(r));
  }
  give(): void {
    const w = this.#waiters.shift();
    if (w) w();
    else this.#free++;
  }
  /** Runs `fn` holding one unit. */
  async with<T>(fn: () => Promise<T>): Promise<T> {
    await this.take();
    try {
      return await fn();
    } finally {
      this.give();
    }
  }
}
