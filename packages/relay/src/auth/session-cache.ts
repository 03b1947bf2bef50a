/**
 * A short-lived, bounded in-memory cache of verified sessions in front of an account
 * store (issue 13). Every forwarded vault message and every blob request checks its
 * bearer session; on PostgreSQL that was a round trip to the server per request (2× the
 * relay CPU of SQLite per check, and a hop of latency), on SQLite a statement.
 *
 * What it may and may not do (docs/relay.md "Session cache"):
 * - An entry lives at most `ttlMs` from the moment its lookup started, and never past the
 *   session's own expiry: an expired session is refused at once, cached or not.
 * - Only live sessions are cached: an unknown, revoked or expired token goes to the store
 *   every time, so the cache cannot be probed with made-up tokens, and a token's check
 *   does not depend on any account (a session token names none).
 * - Revocation through this process (sign-out, ending other sessions, removing device
 *   keys, a password change that ends sessions) drops the entries at once, and a lookup
 *   that was in flight while a revocation ran is not cached (the epoch check below).
 * - Revocation through another relay sharing a PostgreSQL store: every revocation notifies
 *   (pg-store.ts REVOCATIONS_CHANNEL) and this relay drops the account's entries when it
 *   hears it, a moment after the commit; while the listening connection is down nothing
 *   is cached or believed. A store without that watch (SQLite, single relay) relies on
 *   the in-process drops, and another process sharing the file is seen within `ttlMs`.
 * - Keys are the token's SHA-256 (as the stores keep it), never the token.
 */
import type { AccountStore, BucketTake, DeviceKeyInfo, KeyProof, SessionOrigin } from './account-store.js';
import { sha } from './account-store.js';
import type { BucketRule } from '../rate-limit.js';

export const DEFAULT_SESSION_CACHE_MS = 5_000;
export const DEFAULT_SESSION_CACHE_ENTRIES = 10_000;

interface Entry {
  readonly account: string;
  /** Refused from this instant on (ms, the store's clock). */
  readonly until: number;
}

export interface SessionCacheOptions {
  /** How long a verified session is believed without asking the store (ms); 0 = no cache. */
  readonly ttlMs?: number;
  /** Most entries held; the oldest goes first. */
  readonly maxEntries?: number;
  /** The store's clock (tests). */
  readonly now?: () => number;
}

/** The store with session checks answered from the cache where it may; everything else passes through. */
export class SessionCachingStore implements AccountStore {
  readonly kind: AccountStore['kind'];
  readonly #inner: AccountStore;
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  /** Bumped by every revocation: a lookup that saw another epoch at its start is not cached. */
  #epoch = 0;
  /** A shared store's revocations by other relays; null for a single-process store. */
  readonly #watch: { live(): boolean } | null;

  constructor(inner: AccountStore, options: SessionCacheOptions = {}) {
    this.#inner = inner;
    this.kind = inner.kind;
    this.#ttlMs = options.ttlMs ?? DEFAULT_SESSION_CACHE_MS;
    this.#max = Math.max(1, options.maxEntries ?? DEFAULT_SESSION_CACHE_ENTRIES);
    this.#now = options.now ?? Date.now;
    // Another relay's revocation drops the account's entries when it commits; while the
    // watch is down nothing is believed (and what was, is dropped).
    this.#watch = inner.watchRevocations?.((account) => (account === null ? this.#forgetAll() : this.#forget(account))) ?? null;
  }

  #forgetAll(): void {
    this.#epoch++;
    this.#entries.clear();
  }

  /** Entries held now (tests, metrics). */
  get size(): number {
    return this.#entries.size;
  }

  async session(token: string): Promise<string | null> {
    if (this.#watch !== null && !this.#watch.live()) return this.#inner.session(token);
    const key = sha(token).toString('base64');
    const started = this.#now();
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      if (hit.until > started) return hit.account;
      this.#entries.delete(key);
    }
    const epoch = this.#epoch;
    const record = await this.#inner.sessionRecord(token);
    if (record === null || record.expiresAt <= this.#now()) return null;
    if (epoch === this.#epoch && this.#ttlMs > 0 && (this.#watch === null || this.#watch.live())) {
      if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
      this.#entries.set(key, { account: record.account, until: Math.min(record.expiresAt, started + this.#ttlMs) });
    }
    return record.account;
  }

  sessionRecord(token: string): Promise<{ account: string; expiresAt: number } | null> {
    return this.#inner.sessionRecord(token);
  }

  /** Drops the entries of `account` (all but `keep`'s digest) and fails lookups in flight. */
  #forget(account: string, keep: string | null = null): void {
    this.#epoch++;
    for (const [k, e] of this.#entries) if (e.account === account && k !== keep) this.#entries.delete(k);
  }

  async revokeSession(token: string): Promise<boolean> {
    try {
      return await this.#inner.revokeSession(token);
    } finally {
      this.#epoch++;
      this.#entries.delete(sha(token).toString('base64'));
    }
  }

  async revokeOtherSessions(account: string, keep: string | null): Promise<number> {
    try {
      return await this.#inner.revokeOtherSessions(account, keep);
    } finally {
      this.#forget(account, keep === null ? null : sha(keep).toString('base64'));
    }
  }

  async removeKey(account: string, publicKey: Uint8Array): Promise<boolean> {
    try {
      return await this.#inner.removeKey(account, publicKey);
    } finally {
      // The sessions the key opened are gone; which ones those were is the store's to know.
      this.#forget(account);
    }
  }

  async removeOtherKeys(account: string, keep: Uint8Array | null): Promise<number> {
    try {
      return await this.#inner.removeOtherKeys(account, keep);
    } finally {
      this.#forget(account);
    }
  }

  // Everything below passes through unchanged.
  createAccount(publicKey: Uint8Array, passwordHash?: string): Promise<string | null> {
    return this.#inner.createAccount(publicKey, passwordHash);
  }
  setPasswordHash(account: string, hash: string): Promise<void> {
    return this.#inner.setPasswordHash(account, hash);
  }
  passwordHash(account: string): Promise<string | null> {
    return this.#inner.passwordHash(account);
  }
  addKey(account: string, publicKey: Uint8Array): Promise<boolean> {
    return this.#inner.addKey(account, publicKey);
  }
  listKeys(account: string): Promise<DeviceKeyInfo[]> {
    return this.#inner.listKeys(account);
  }
  challenge(account: string): Promise<{ challenge: Uint8Array; expiresAt: number }> {
    return this.#inner.challenge(account);
  }
  proveKey(account: string, challenge: Uint8Array, signature: Uint8Array): Promise<KeyProof> {
    return this.#inner.proveKey(account, challenge, signature);
  }
  takeChallenge(account: string, challenge: Uint8Array): Promise<boolean> {
    return this.#inner.takeChallenge(account, challenge);
  }
  openSession(account: string, origin: SessionOrigin): Promise<{ token: string; expiresAt: number }> {
    return this.#inner.openSession(account, origin);
  }
  sessionKey(token: string): Promise<Buffer | null> {
    return this.#inner.sessionKey(token);
  }
  exists(account: string): Promise<boolean> {
    return this.#inner.exists(account);
  }
  take(bucket: string, key: string, rule: BucketRule, force?: boolean): Promise<BucketTake> {
    return this.#inner.take(bucket, key, rule, force);
  }
  refund(bucket: string, key: string, rule: BucketRule): Promise<void> {
    return this.#inner.refund(bucket, key, rule);
  }
  async close(): Promise<void> {
    this.#forgetAll();
    await this.#inner.close();
  }
}
