/**
 * Built-in accounts (spec/relay-api.md §1): device keys (Ed25519), single-use sign-in
 * challenges and sessions, account-password verifiers and the shared failure counters
 * of the sign-in limits. Two implementations behind one asynchronous interface:
 * SQLite (the embedded default, this file) and PostgreSQL (auth/pg-store.ts, for
 * several relays sharing one store). Session tokens and challenges are stored as their
 * SHA-256 only, so a copy of the database does not let anyone sign in.
 */
import Database from 'better-sqlite3';
import { createHash, createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { nodeHash } from '../node-hash.js';
import { LABELS } from '@coffer/protocol';
import type { BucketRule } from '../rate-limit.js';

export const CHALLENGE_TTL_MS = 2 * 60_000;
export const DEFAULT_SESSION_TTL_MS = 24 * 3_600_000;
/** spec/relay-api.md §1; the one definition is @coffer/protocol's LABELS.relaySession. */
export const SESSION_SIGNING_LABEL = LABELS.relaySession;
const ACCOUNT_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** SHA-256 of a token: one-shot where Node has it (node-hash.ts; issue 13). */
const oneShot = nodeHash;
export const sha = oneShot ? (b: Uint8Array | string): Buffer => oneShot('sha256', b, 'buffer') : (b: Uint8Array | string): Buffer => createHash('sha256').update(b).digest();
export const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

export function decodeB64u(text: unknown, length: number): Buffer | null {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]+$/.test(text)) return null;
  const b = Buffer.from(text, 'base64url');
  return b.length === length && b.toString('base64url') === text ? b : null;
}

/** A raw 32-byte Ed25519 public key as a KeyObject, or null if it is not one. */
export function ed25519PublicKey(raw: Uint8Array): KeyObject | null {
  if (raw.length !== 32) return null;
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(raw) }, format: 'jwk' });
  } catch {
    return null;
  }
}

/** The bytes a device signs to open a session: label || 0x00 || challenge. */
export function sessionSigningInput(challenge: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(SESSION_SIGNING_LABEL, 'utf8'), Buffer.from([0]), challenge]);
}

export function newAccountId(): string {
  // 26 characters from 36: rejection sampling keeps the choice uniform (~134 bits).
  let id = '';
  while (id.length < 26) for (const byte of randomBytes(32)) if (byte < 252 && id.length < 26) id += ACCOUNT_ALPHABET[byte % 36];
  return id;
}

/** Shared buckets untouched this long have refilled under every configured rule and are dropped. */
export const BUCKET_IDLE_MS = 24 * 3_600_000;

export const newSessionToken = (): string => `cs1.${b64u(randomBytes(32))}`;

/** Which of the account's device keys signed, if any, over `challenge`. */
export function signingKey(keys: readonly Buffer[], challenge: Uint8Array, signature: Uint8Array): Buffer | null {
  if (signature.length !== 64) return null;
  const message = sessionSigningInput(challenge);
  for (const k of keys) {
    const key = ed25519PublicKey(k);
    if (key !== null && verify(null, message, key, signature)) return k;
  }
  return null;
}

/** A device key as listed to its account's owner. */
export interface DeviceKeyInfo {
  /** base64url raw 32-byte Ed25519 key (also its ID in the API). */
  readonly publicKey: string;
  readonly createdAt: number;
  /** Last sign-in or proof with this key (ms), null when never used. */
  readonly lastUsedAt: number | null;
}

/**
 * The outcome of a device-key proof: 'ok' (with the key that signed), 'bad-signature'
 * (a live challenge issued for this account, wrongly signed: counted as a failure) or
 * 'no-challenge' (unknown, used, expired or another account's challenge: not counted
 * against the account — anyone can make those up, so they say nothing about its keys).
 */
export type KeyProof = { readonly result: 'ok'; readonly key: Buffer } | { readonly result: 'bad-signature' | 'no-challenge' };

/** Where a session came from: a device key (raw) or the account password. */
export type SessionOrigin = { readonly key: Buffer } | { readonly password: true };

export interface AccountStore {
  readonly kind: 'sqlite' | 'postgres';
  /** Creates an account holding `publicKey` (and the password verifier); null if the key is already registered. */
  createAccount(publicKey: Uint8Array, passwordHash?: string): Promise<string | null>;
  /** Sets or replaces the account password's stored scrypt string. */
  setPasswordHash(account: string, hash: string): Promise<void>;
  /** The stored scrypt string of the account password, or null (no such account, or none set). */
  passwordHash(account: string): Promise<string | null>;
  /** Adds another device key to an existing account; false if the key is registered already. */
  addKey(account: string, publicKey: Uint8Array): Promise<boolean>;
  listKeys(account: string): Promise<DeviceKeyInfo[]>;
  /** Removes a device key of `account` and ends every session it opened; false when it is not one of the account's. */
  removeKey(account: string, publicKey: Uint8Array): Promise<boolean>;
  /** Removes every device key of `account` except `keep` (null: all), ending their sessions; how many went. */
  removeOtherKeys(account: string, keep: Uint8Array | null): Promise<number>;
  /** A fresh single-use challenge (issued for unknown accounts too, so the answer does not reveal which exist). */
  challenge(account: string): Promise<{ challenge: Uint8Array; expiresAt: number }>;
  /** Consumes the challenge and checks the signature (see KeyProof). */
  proveKey(account: string, challenge: Uint8Array, signature: Uint8Array): Promise<KeyProof>;
  /** Consumes a live challenge of `account` issued under `kind` (e.g. a proof-of-work); true when it was live. */
  takeChallenge(account: string, challenge: Uint8Array): Promise<boolean>;
  /** A new session for `account` (after the caller checked its credentials). */
  openSession(account: string, origin: SessionOrigin): Promise<{ token: string; expiresAt: number }>;
  /** The account of a live session token, or null. */
  session(token: string): Promise<string | null>;
  /** The account and expiry (ms) of a live session token, or null (the session cache's lookup). */
  sessionRecord(token: string): Promise<{ account: string; expiresAt: number } | null>;
  /** The device key that opened the session `token` (null: the password, or no such session). */
  sessionKey(token: string): Promise<Buffer | null>;
  /**
   * Stores shared by several relays (PostgreSQL): `fn(account)` whenever any relay ends
   * sessions of `account`, `fn(null)` when some may have been missed (the watch broke);
   * `live()` tells whether revocations are being heard now. Absent: single-process stores.
   */
  watchRevocations?(fn: (account: string | null) => void): { live(): boolean };
  /** Ends one session; true when it was live. */
  revokeSession(token: string): Promise<boolean>;
  /** Ends every session of `account` except the one with token `keep` (null: all). */
  revokeOtherSessions(account: string, keep: string | null): Promise<number>;
  exists(account: string): Promise<boolean>;
  /**
   * A token bucket shared by every relay on this store (the sign-in failure limits):
   * takes a token, 0 when allowed, else the seconds to wait. `refund` gives one back.
   */
  take(bucket: string, key: string, rule: BucketRule, force?: boolean): Promise<BucketTake>;
  refund(bucket: string, key: string, rule: BucketRule): Promise<void>;
  close(): Promise<void>;
}

/**
 * A take from a shared bucket: `wait` 0 when a token was there, else the seconds until
 * one is; `tokens` after the take. With `force` a token is taken even from an empty
 * bucket, which goes into debt (tokens < 0): the debt measures how far beyond its limit
 * an account is being tried, and decays at the bucket's rate.
 */
export interface BucketTake {
  readonly wait: number;
  readonly tokens: number;
}

/** Token-bucket arithmetic shared by the stores: the state after taking one token at `now`. */
export function bucketAfterTake(state: { tokens: number; at: number } | undefined, rule: BucketRule, now: number, force = false): { tokens: number; at: number; wait: number } {
  const tokens = state ? Math.min(rule.burst, state.tokens + (Math.max(0, now - state.at) / 1000) * rule.perSecond) : rule.burst;
  if (tokens >= 1) return { tokens: tokens - 1, at: now, wait: 0 };
  const wait = Math.max(1, Math.ceil((1 - tokens) / rule.perSecond));
  return { tokens: force ? tokens - 1 : tokens, at: now, wait };
}

interface SqliteStatements {
  insertAccount: Database.Statement<[string, number]>;
  setPassword: Database.Statement<[string, string, number]>;
  password: Database.Statement<[string], { hash: string }>;
  insertKey: Database.Statement<[Buffer, string, number]>;
  keysOf: Database.Statement<[string], { public_key: Buffer; created_at: number; last_used_at: number | null }>;
  touchKey: Database.Statement<[number, Buffer]>;
  deleteKey: Database.Statement<[string, Buffer]>;
  sessionsOfKey: Database.Statement<[string, Buffer]>;
  accountExists: Database.Statement<[string], { id: string }>;
  insertChallenge: Database.Statement<[Buffer, string, number]>;
  takeChallenge: Database.Statement<[Buffer, string], { expires_at: number }>;
  insertSession: Database.Statement<[Buffer, string, number, Buffer | null]>;
  session: Database.Statement<[Buffer], { account: string; expires_at: number; device_key: Buffer | null }>;
  /** The check of every request: account and expiry as a raw row (no device key, no row object). */
  sessionCheck: Database.Statement<[Buffer], [string, number]>;
  deleteSession: Database.Statement<[Buffer]>;
  sweep: Database.Statement<[number]>;
  sweepSessions: Database.Statement<[number]>;
  revokeOthers: Database.Statement<[string, Buffer]>;
  bucket: Database.Statement<[string], { tokens: number; at: number }>;
  sweepBuckets: Database.Statement<[number]>;
  setBucket: Database.Statement<[string, number, number]>;
}

/** The embedded store: one SQLite file (WAL), mode 0600 in a 0700 directory. */
export class SqliteAccountStore implements AccountStore {
  readonly kind = 'sqlite' as const;
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #sessionTtlMs: number;
  readonly #st: SqliteStatements;
  #sweptAt = 0;

  constructor(path: string, options: { now?: () => number; sessionTtlMs?: number } = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#db = new Database(path);
    this.#now = options.now ?? Date.now;
    this.#sessionTtlMs = options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#db.pragma('busy_timeout = 5000');
    // Account data and verifiers: owner-only, the database and its WAL/SHM files alike.
    if (path !== ':memory:') for (const f of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL) STRICT;
      CREATE TABLE IF NOT EXISTS device_keys (public_key BLOB PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(id), created_at INTEGER NOT NULL) STRICT;
      CREATE INDEX IF NOT EXISTS device_keys_account ON device_keys(account);
      CREATE TABLE IF NOT EXISTS challenges (digest BLOB PRIMARY KEY, account TEXT NOT NULL, expires_at INTEGER NOT NULL) STRICT;
      CREATE TABLE IF NOT EXISTS account_passwords (account TEXT PRIMARY KEY REFERENCES accounts(id), hash TEXT NOT NULL, updated_at INTEGER NOT NULL) STRICT;
      CREATE TABLE IF NOT EXISTS sessions (digest BLOB PRIMARY KEY, account TEXT NOT NULL, expires_at INTEGER NOT NULL) STRICT;
      CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, at INTEGER NOT NULL) STRICT;
    `);
    // Migration 2: device keys remember their last use; sessions, the key that opened them.
    const cols = (t: string): string[] => (this.#db.prepare(`PRAGMA table_info(${t})`).all() as { name: string }[]).map((c) => c.name);
    if (!cols('device_keys').includes('last_used_at')) this.#db.exec('ALTER TABLE device_keys ADD COLUMN last_used_at INTEGER');
    if (!cols('sessions').includes('device_key')) this.#db.exec('ALTER TABLE sessions ADD COLUMN device_key BLOB');
    this.#db.exec('CREATE INDEX IF NOT EXISTS sessions_account ON sessions(account)');
    this.#st = {
      insertAccount: this.#db.prepare('INSERT INTO accounts (id, created_at) VALUES (?, ?)'),
      setPassword: this.#db.prepare('INSERT INTO account_passwords (account, hash, updated_at) VALUES (?, ?, ?) ON CONFLICT(account) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at'),
      password: this.#db.prepare('SELECT hash FROM account_passwords WHERE account = ?'),
      insertKey: this.#db.prepare('INSERT INTO device_keys (public_key, account, created_at) VALUES (?, ?, ?)'),
      keysOf: this.#db.prepare('SELECT public_key, created_at, last_used_at FROM device_keys WHERE account = ? ORDER BY created_at, public_key'),
      touchKey: this.#db.prepare('UPDATE device_keys SET last_used_at = ? WHERE public_key = ?'),
      deleteKey: this.#db.prepare('DELETE FROM device_keys WHERE account = ? AND public_key = ?'),
      sessionsOfKey: this.#db.prepare('DELETE FROM sessions WHERE account = ? AND device_key = ?'),
      accountExists: this.#db.prepare('SELECT id FROM accounts WHERE id = ?'),
      insertChallenge: this.#db.prepare('INSERT INTO challenges (digest, account, expires_at) VALUES (?, ?, ?)'),
      // Single use: the row is gone the moment it is read.
      takeChallenge: this.#db.prepare('DELETE FROM challenges WHERE digest = ? AND account = ? RETURNING expires_at'),
      insertSession: this.#db.prepare('INSERT INTO sessions (digest, account, expires_at, device_key) VALUES (?, ?, ?, ?)'),
      session: this.#db.prepare('SELECT account, expires_at, device_key FROM sessions WHERE digest = ?'),
      sessionCheck: (this.#db.prepare('SELECT account, expires_at FROM sessions WHERE digest = ?') as Database.Statement<[Buffer], unknown>).raw(true) as Database.Statement<[Buffer], [string, number]>,
      deleteSession: this.#db.prepare('DELETE FROM sessions WHERE digest = ?'),
      sweep: this.#db.prepare('DELETE FROM challenges WHERE expires_at < ?'),
      sweepSessions: this.#db.prepare('DELETE FROM sessions WHERE expires_at < ?'),
      revokeOthers: this.#db.prepare('DELETE FROM sessions WHERE account = ? AND digest != ?'),
      bucket: this.#db.prepare('SELECT tokens, at FROM buckets WHERE key = ?'),
      sweepBuckets: this.#db.prepare('DELETE FROM buckets WHERE at < ?'),
      setBucket: this.#db.prepare('INSERT INTO buckets (key, tokens, at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at'),
    };
    if (path !== ':memory:') for (const f of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
  }

  #constraint(err: unknown): boolean {
    return (err as { code?: string }).code?.startsWith('SQLITE_CONSTRAINT') ?? false;
  }

  async createAccount(publicKey: Uint8Array, passwordHash?: string): Promise<string | null> {
    const id = newAccountId();
    const now = this.#now();
    try {
      this.#db.transaction(() => {
        this.#st.insertAccount.run(id, now);
        this.#st.insertKey.run(Buffer.from(publicKey), id, now);
        if (passwordHash !== undefined) this.#st.setPassword.run(id, passwordHash, now);
      })();
    } catch (err) {
      if (this.#constraint(err)) return null;
      throw err;
    }
    return id;
  }

  async setPasswordHash(account: string, hash: string): Promise<void> {
    this.#st.setPassword.run(account, hash, this.#now());
  }

  async passwordHash(account: string): Promise<string | null> {
    return this.#st.password.get(account)?.hash ?? null;
  }

  async addKey(account: string, publicKey: Uint8Array): Promise<boolean> {
    try {
      this.#st.insertKey.run(Buffer.from(publicKey), account, this.#now());
      return true;
    } catch (err) {
      if (this.#constraint(err)) return false;
      throw err;
    }
  }

  async listKeys(account: string): Promise<DeviceKeyInfo[]> {
    return this.#st.keysOf.all(account).map((k) => ({ publicKey: b64u(k.public_key), createdAt: k.created_at, lastUsedAt: k.last_used_at }));
  }

  async removeKey(account: string, publicKey: Uint8Array): Promise<boolean> {
    const key = Buffer.from(publicKey);
    return this.#db.transaction(() => {
      const removed = this.#st.deleteKey.run(account, key).changes > 0;
      if (removed) this.#st.sessionsOfKey.run(account, key);
      return removed;
    })();
  }

  async removeOtherKeys(account: string, keep: Uint8Array | null): Promise<number> {
    const k = keep ? Buffer.from(keep) : null;
    return this.#db.transaction(() => {
      let n = 0;
      for (const row of this.#st.keysOf.all(account)) {
        if (k && row.public_key.equals(k)) continue;
        this.#st.deleteKey.run(account, row.public_key);
        this.#st.sessionsOfKey.run(account, row.public_key);
        n++;
      }
      return n;
    })();
  }

  async challenge(account: string): Promise<{ challenge: Uint8Array; expiresAt: number }> {
    this.#maybeSweep();
    const challenge = randomBytes(32);
    const expiresAt = this.#now() + CHALLENGE_TTL_MS;
    this.#st.insertChallenge.run(sha(challenge), account, expiresAt);
    return { challenge, expiresAt };
  }

  async takeChallenge(account: string, challenge: Uint8Array): Promise<boolean> {
    const row = this.#st.takeChallenge.get(sha(challenge), account);
    return !!row && row.expires_at >= this.#now();
  }

  async proveKey(account: string, challenge: Uint8Array, signature: Uint8Array): Promise<KeyProof> {
    if (!(await this.takeChallenge(account, challenge))) return { result: 'no-challenge' };
    const key = signingKey(this.#st.keysOf.all(account).map((k) => k.public_key), challenge, signature);
    if (!key) return { result: 'bad-signature' };
    this.#st.touchKey.run(this.#now(), key);
    return { result: 'ok', key };
  }

  async openSession(account: string, origin: SessionOrigin): Promise<{ token: string; expiresAt: number }> {
    const token = newSessionToken();
    const expiresAt = this.#now() + this.#sessionTtlMs;
    this.#st.insertSession.run(sha(token), account, expiresAt, 'key' in origin ? Buffer.from(origin.key) : null);
    return { token, expiresAt };
  }

  async session(token: string): Promise<string | null> {
    return (await this.sessionRecord(token))?.account ?? null;
  }

  async sessionRecord(token: string): Promise<{ account: string; expiresAt: number } | null> {
    const row = this.#st.sessionCheck.get(sha(token));
    if (!row || row[1] <= this.#now()) return null;
    return { account: row[0], expiresAt: row[1] };
  }

  async sessionKey(token: string): Promise<Buffer | null> {
    return this.#st.session.get(sha(token))?.device_key ?? null;
  }

  async revokeSession(token: string): Promise<boolean> {
    return this.#st.deleteSession.run(sha(token)).changes > 0;
  }

  async revokeOtherSessions(account: string, keep: string | null): Promise<number> {
    return this.#st.revokeOthers.run(account, keep === null ? Buffer.alloc(0) : sha(keep)).changes;
  }

  async exists(account: string): Promise<boolean> {
    return this.#st.accountExists.get(account) !== undefined;
  }

  async take(bucket: string, key: string, rule: BucketRule, force = false): Promise<BucketTake> {
    const k = `${bucket} ${key}`;
    return this.#db.transaction(() => {
      const next = bucketAfterTake(this.#st.bucket.get(k), rule, this.#now(), force);
      this.#st.setBucket.run(k, next.tokens, next.at);
      return { wait: next.wait, tokens: next.tokens };
    })();
  }

  async refund(bucket: string, key: string, rule: BucketRule): Promise<void> {
    const k = `${bucket} ${key}`;
    const b = this.#st.bucket.get(k);
    if (b) this.#st.setBucket.run(k, Math.min(rule.burst, b.tokens + 1), b.at);
  }

  #maybeSweep(): void {
    const now = this.#now();
    if (now - this.#sweptAt < 60_000) return;
    this.#sweptAt = now;
    this.#st.sweep.run(now);
    this.#st.sweepSessions.run(now);
    this.#st.sweepBuckets.run(now - BUCKET_IDLE_MS);
  }

  async close(): Promise<void> {
    this.#db.close();
  }
}
