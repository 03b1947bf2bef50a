/**
 * Built-in accounts (spec/relay-api.md §1): device keys (Ed25519), single-use sign-in
 * challenges and sessions, in SQLite. Session tokens and challenges are stored as their
 * SHA-256 only, so a copy of the database does not let anyone sign in.
 */
import Database from 'better-sqlite3';
import { createHash, createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { LABELS } from '@coffer/protocol';

export const CHALLENGE_TTL_MS = 2 * 60_000;
export const DEFAULT_SESSION_TTL_MS = 24 * 3_600_000;
/** spec/relay-api.md §1; the one definition is @coffer/protocol's LABELS.relaySession. */
export const SESSION_SIGNING_LABEL = LABELS.relaySession;
const ACCOUNT_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

const sha = (b: Uint8Array | string): Buffer => createHash('sha256').update(b).digest();
const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

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

function newAccountId(): string {
  // 26 characters from 36: rejection sampling keeps the choice uniform (~134 bits).
  let id = '';
  while (id.length < 26) for (const byte of randomBytes(32)) if (byte < 252 && id.length < 26) id += ACCOUNT_ALPHABET[byte % 36];
  return id;
}

export class AccountStore {
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #sessionTtlMs: number;
  readonly #st: {
    insertAccount: Database.Statement<[string, number]>;
    setPassword: Database.Statement<[string, string, number]>;
    password: Database.Statement<[string], { hash: string }>;
    insertKey: Database.Statement<[Buffer, string, number]>;
    keysOf: Database.Statement<[string], { public_key: Buffer }>;
    accountExists: Database.Statement<[string], { id: string }>;
    insertChallenge: Database.Statement<[Buffer, string, number]>;
    takeChallenge: Database.Statement<[Buffer, string], { expires_at: number }>;
    insertSession: Database.Statement<[Buffer, string, number]>;
    session: Database.Statement<[Buffer], { account: string; expires_at: number }>;
    sweep: Database.Statement<[number]>;
    sweepSessions: Database.Statement<[number]>;
    revokeSessions: Database.Statement<[string, Buffer]>;
  };
  #sweptAt = 0;

  constructor(path: string, options: { now?: () => number; sessionTtlMs?: number } = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#db = new Database(path);
    this.#now = options.now ?? Date.now;
    this.#sessionTtlMs = options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#db.pragma('busy_timeout = 5000');
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL) STRICT;
      CREATE TABLE IF NOT EXISTS device_keys (public_key BLOB PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(id), created_at INTEGER NOT NULL) STRICT;
      CREATE INDEX IF NOT EXISTS device_keys_account ON device_keys(account);
      CREATE TABLE IF NOT EXISTS challenges (digest BLOB PRIMARY KEY, account TEXT NOT NULL, expires_at INTEGER NOT NULL) STRICT;
      CREATE TABLE IF NOT EXISTS account_passwords (account TEXT PRIMARY KEY REFERENCES accounts(id), hash TEXT NOT NULL, updated_at INTEGER NOT NULL) STRICT;
      CREATE TABLE IF NOT EXISTS sessions (digest BLOB PRIMARY KEY, account TEXT NOT NULL, expires_at INTEGER NOT NULL) STRICT;
    `);
    this.#st = {
      insertAccount: this.#db.prepare('INSERT INTO accounts (id, created_at) VALUES (?, ?)'),
      setPassword: this.#db.prepare('INSERT INTO account_passwords (account, hash, updated_at) VALUES (?, ?, ?) ON CONFLICT(account) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at'),
      password: this.#db.prepare('SELECT hash FROM account_passwords WHERE account = ?'),
      insertKey: this.#db.prepare('INSERT INTO device_keys (public_key, account, created_at) VALUES (?, ?, ?)'),
      keysOf: this.#db.prepare('SELECT public_key FROM device_keys WHERE account = ?'),
      accountExists: this.#db.prepare('SELECT id FROM accounts WHERE id = ?'),
      insertChallenge: this.#db.prepare('INSERT INTO challenges (digest, account, expires_at) VALUES (?, ?, ?)'),
      // Single use: the row is gone the moment it is read.
      takeChallenge: this.#db.prepare('DELETE FROM challenges WHERE digest = ? AND account = ? RETURNING expires_at'),
      insertSession: this.#db.prepare('INSERT INTO sessions (digest, account, expires_at) VALUES (?, ?, ?)'),
      session: this.#db.prepare('SELECT account, expires_at FROM sessions WHERE digest = ?'),
      sweep: this.#db.prepare('DELETE FROM challenges WHERE expires_at < ?'),
      sweepSessions: this.#db.prepare('DELETE FROM sessions WHERE expires_at < ?'),
      revokeSessions: this.#db.prepare('DELETE FROM sessions WHERE account = ? AND digest != ?'),
    };
  }

  /**
   * Creates an account holding `publicKey` and, when given, the account password's
   * stored scrypt string (auth/password.ts); null if the key is already registered.
   */
  createAccount(publicKey: Uint8Array, passwordHash?: string): string | null {
    const id = newAccountId();
    const now = this.#now();
    try {
      this.#db.transaction(() => {
        this.#st.insertAccount.run(id, now);
        this.#st.insertKey.run(Buffer.from(publicKey), id, now);
        if (passwordHash !== undefined) this.#st.setPassword.run(id, passwordHash, now);
      })();
    } catch (err) {
      if ((err as { code?: string }).code?.startsWith('SQLITE_CONSTRAINT')) return null;
      throw err;
    }
    return id;
  }

  /** Sets or replaces the account password's stored scrypt string. */
  setPasswordHash(account: string, hash: string): void {
    this.#st.setPassword.run(account, hash, this.#now());
  }

  /** The stored scrypt string of the account password, or null (no such account, or none set). */
  passwordHash(account: string): string | null {
    return this.#st.password.get(account)?.hash ?? null;
  }

  /** Adds another device key to an existing account; false if the key is registered already. */
  addKey(account: string, publicKey: Uint8Array): boolean {
    try {
      this.#st.insertKey.run(Buffer.from(publicKey), account, this.#now());
      return true;
    } catch (err) {
      if ((err as { code?: string }).code?.startsWith('SQLITE_CONSTRAINT')) return false;
      throw err;
    }
  }

  /**
   * A fresh single-use challenge. Issued for unknown accounts too (it can never be
   * answered), so the answer does not reveal which accounts exist.
   */
  challenge(account: string): { challenge: Uint8Array; expiresAt: number } {
    this.#maybeSweep();
    const challenge = randomBytes(32);
    const expiresAt = this.#now() + CHALLENGE_TTL_MS;
    this.#st.insertChallenge.run(sha(challenge), account, expiresAt);
    return { challenge, expiresAt };
  }

  /** Consumes the challenge and checks the signature; a session on success, else null. */
  signIn(account: string, challenge: Uint8Array, signature: Uint8Array): { token: string; expiresAt: number } | null {
    return this.proveKey(account, challenge, signature) ? this.openSession(account) : null;
  }

  /**
   * Consumes the challenge and checks that `signature` over it is by one of the
   * account's device keys: fresh proof of a long-term credential (sign-in, and the
   * changes a bare session token may not make).
   */
  proveKey(account: string, challenge: Uint8Array, signature: Uint8Array): boolean {
    const row = this.#st.takeChallenge.get(sha(challenge), account);
    if (!row || row.expires_at < this.#now()) return false;
    const message = sessionSigningInput(challenge);
    return this.#st.keysOf.all(account).some((k) => {
      const key = ed25519PublicKey(k.public_key);
      return key !== null && signature.length === 64 && verify(null, message, key, signature);
    });
  }

  /** Ends every session of `account` except the one with token `keep`. */
  revokeOtherSessions(account: string, keep: string): number {
    return this.#st.revokeSessions.run(account, sha(keep)).changes;
  }

  /** A new session for `account` (after the caller checked its credentials). */
  openSession(account: string): { token: string; expiresAt: number } {
    const token = `cs1.${b64u(randomBytes(32))}`;
    const expiresAt = this.#now() + this.#sessionTtlMs;
    this.#st.insertSession.run(sha(token), account, expiresAt);
    return { token, expiresAt };
  }

  /** The account of a live session token, or null. */
  session(token: string): string | null {
    const row = this.#st.session.get(sha(token));
    if (!row || row.expires_at <= this.#now()) return null;
    return row.account;
  }

  exists(account: string): boolean {
    return this.#st.accountExists.get(account) !== undefined;
  }

  #maybeSweep(): void {
    const now = this.#now();
    if (now - this.#sweptAt < 60_000) return;
    this.#sweptAt = now;
    this.#st.sweep.run(now);
    this.#st.sweepSessions.run(now);
  }

  close(): void {
    this.#db.close();
  }
}
