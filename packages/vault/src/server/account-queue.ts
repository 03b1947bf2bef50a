/**
 * Runs tasks for one account one at a time on this node. Correctness does not depend
 * on it (the store's compare-and-swap does that, across nodes too); it only saves the
 * work a CAS loser would throw away when many requests for one account arrive at once.
 */
export class AccountQueue {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(account: string, task: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(account) ?? Promise.resolve();
    const next = prev.then(task, task);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(account, tail);
    void tail.then(() => {
      if (this.#tails.get(account) === tail) this.#tails.delete(account);
    });
    return next;
  }
}
