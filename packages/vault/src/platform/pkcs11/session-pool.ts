/**
 * A small pool of logged-in PKCS#11 sessions.
 *
 * A PKCS#11 session runs one cryptographic operation at a time (C_EncryptInit on a
 * busy session fails with CKR_OPERATION_ACTIVE), so each operation leases a session
 * for its whole Init…Final sequence and callers queue for a free one. Sessions are
 * opened lazily up to `size`. A session whose operation failed is closed rather than
 * reused: after some errors (CKR_ARGUMENTS_BAD, CKR_BUFFER_TOO_SMALL on SoftHSM2) the
 * operation stays active and PKCS#11 2.40 has no way to cancel it.
 */
import type { Handle } from 'pkcs11js';
import { PlatformError } from '../../core/platform.js';

interface Waiter {
  resolve(session: Handle): void;
  reject(err: unknown): void;
}

export class SessionPool {
  readonly #open: () => Handle;
  readonly #close: (session: Handle) => void;
  readonly #idle: Handle[] = [];
  readonly #waiters: Waiter[] = [];
  #live = 0;
  #busy = 0;
  #closed = false;
  #drained: (() => void) | undefined;

  /**
   * @param size the most sessions open at once (≥ 1)
   * @param open opens one logged-in session; may throw (mapped to PlatformError by the caller)
   * @param close closes one session; must not throw
   */
  constructor(
    readonly size: number,
    open: () => Handle,
    close: (session: Handle) => void,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`size must be a positive integer, got ${size}`);
    this.#open = open;
    this.#close = close;
  }

  /** Sessions currently open. */
  get open(): number {
    return this.#live;
  }

  /**
   * Runs `fn` with a session of its own. If `fn` throws, the session is closed and a
   * fresh one is opened for the next caller.
   * @throws PlatformError('hsm-failure') once the pool is closed
   */
  async use<T>(fn: (session: Handle) => T | Promise<T>): Promise<T> {
    const session = await this.#acquire();
    let broken = true;
    try {
      const result = await fn(session);
      broken = false;
      return result;
    } finally {
      this.#release(session, broken);
    }
  }

  /** Refuses new work, fails queued callers, waits for running ones, closes every session. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w.reject(closedError());
    if (this.#busy > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
    for (const s of this.#idle.splice(0)) this.#discard(s);
  }

  #acquire(): Promise<Handle> {
    if (this.#closed) return Promise.reject(closedError());
    try {
      const s = this.#take();
      if (s !== undefined) return Promise.resolve(s);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<Handle>((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** An idle session, or a newly opened one if under `size`, or `undefined` if all are busy. */
  #take(): Handle | undefined {
    const idle = this.#idle.pop();
    if (idle !== undefined) {
      this.#busy++;
      return idle;
    }
    if (this.#live >= this.size) return undefined;
    this.#live++;
    try {
      const s = this.#open();
      this.#busy++;
      return s;
    } catch (err) {
      this.#live--;
      throw err;
    }
  }

  #release(session: Handle, broken: boolean): void {
    this.#busy--;
    if (broken || this.#closed) {
      this.#discard(session);
    } else {
      this.#idle.push(session);
    }
    if (this.#closed) {
      if (this.#busy === 0) this.#drained?.();
      return;
    }
    // Hand the freed capacity to waiters, opening a fresh session if needed. If opening
    // fails (token gone), that waiter gets the error and the next one tries again, so
    // nobody is left waiting on capacity that no running operation will free.
    while (this.#waiters.length > 0) {
      let s: Handle | undefined;
      try {
        s = this.#take();
      } catch (err) {
        this.#waiters.shift()?.reject(err);
        continue;
      }
      if (s === undefined) return;
      this.#waiters.shift()?.resolve(s);
    }
  }

  #discard(session: Handle): void {
    this.#live--;
    this.#close(session);
  }
}

function closedError(): PlatformError {
  return new PlatformError('pkcs11: the platform is closed', 'hsm-failure');
}
