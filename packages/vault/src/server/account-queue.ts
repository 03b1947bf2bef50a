/**
 * Runs tasks for one account one at a time on this node. Correctness does not depend
 * on it (the store's compare-and-swap does that, across nodes too); it only saves the
 * work a CAS loser would throw away when many requests for one account arrive at once.
 *
 * An account with nothing queued (nearly every request) runs its task at once; the
 * account's tail is one promise that also removes itself from the map when it is still
 * the newest (before: a resolved promise to chain on, the task's promise, a tail and a
 * clean-up step, each a promise of its own and a microtask turn).
 */
export class AccountQueue {
  readonly #tails = new Map<string, Promise<void>>();

  run<T>(account: string, task: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(account);
    let next: Promise<T>;
    if (prev === undefined) {
      try {
        next = task();
      } catch (err) {
        next = Promise.reject(err);
      }
    } else next = prev.then(task, task);
    const done = (): void => {
      if (this.#tails.get(account) === tail) this.#tails.delete(account);
    };
    const tail: Promise<void> = next.then(done, done);
    this.#tails.set(account, tail);
    return next;
  }

  /** Accounts with a task running or queued (tests). */
  get accounts(): number {
    return this.#tails.size;
  }
}
