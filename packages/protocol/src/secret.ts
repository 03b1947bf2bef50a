/**
 * A value that must never reach a log. `toJSON`, `toString` and Node's `inspect`
 * all print `[redacted]`; the value is only reachable through `expose()`, which is
 * easy to grep for.
 */
const REDACTED = '[redacted]';

export class Secret<T> {
  readonly #value: T;
  constructor(value: T) {
    this.#value = value;
  }
  /** The secret itself. Every call site is a place where the secret is used. */
  expose(): T {
    return this.#value;
  }
  toJSON(): string {
    return REDACTED;
  }
  toString(): string {
    return REDACTED;
  }
  // Node's util.inspect looks this symbol up; using Symbol.for keeps `node:util` out of
  // this isomorphic package.
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return REDACTED;
  }
}
