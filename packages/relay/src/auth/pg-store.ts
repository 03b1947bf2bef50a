/**
 * The PostgreSQL account store: the same data as the SQLite store (accounts, device
 * keys, challenges, sessions, account-password verifiers, the shared sign-in failure
 * buckets), in one database that every relay of a deployment shares, so a device signs
 * in through any relay and is limited the same way whichever it reaches. Quotas are
 * counted from the blob store itself (which relays share as well).
 *
 * `pg` with a pool, a connect timeout, a per-statement timeout and numbered migrations
 * applied at start under an advisory lock (so relays starting together migrate once).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { BucketRule } from '../rate-limit.js';
import {
  bucketAfterTake,
  BUCKET_IDLE_MS,
  b64u,
  CHALLENGE_TTL_MS,
  DEFAULT_SESSION_TTL_MS,
  newAccountId,
  newSessionToken,
  sha,
  signingKey,
  type AccountStore,
  type BucketTake,
  type DeviceKeyInfo,
  type KeyProof,
  type SessionOrigin,
} from './account-store.js';
import type { PostgresConfig } from '../config.js';

/** Schema versions, applied in order; never edit one that has shipped, add the next. */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE accounts (id TEXT PRIMARY KEY, created_at BIGINT NOT NULL);
   CREATE TABLE device_keys (public_key BYTEA PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(id), created_at BIGINT NOT NULL, last_used_at BIGINT);
   CREATE INDEX device_keys_account ON device_keys(account);
   CREATE TABLE challenges (digest BYTEA PRIMARY KEY, account TEXT NOT NULL, expires_at BIGINT NOT NULL);
   CREATE INDEX challenges_expiry ON challenges(expires_at);
   CREATE TABLE account_passwords (account TEXT PRIMARY KEY REFERENCES accounts(id), hash TEXT NOT NULL, updated_at BIGINT NOT NULL);
   CREATE TABLE sessions (digest BYTEA PRIMARY KEY, account TEXT NOT NULL, expires_at BIGINT NOT NULL, device_key BYTEA);
   CREATE INDEX sessions_account ON sessions(account);
   CREATE INDEX sessions_expiry ON sessions(expires_at);
   CREATE TABLE buckets (key TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, at BIGINT NOT NULL);
   CREATE INDEX buckets_at ON buckets(at);`,
];

const MIGRATION_LOCK = 0x636f6666; // 'coff'

const num = (v: unknown): number => (typeof v === 'string' ? Number(v) : (v as number));

/**
 * Every revocation of sessions (sign-out, ending other sessions, removing device keys)
 * notifies this channel with the account, in the same transaction: relays caching
 * verified sessions (auth/session-cache.ts) drop that account's entries when it commits.
 */
export const REVOCATIONS_CHANNEL = 'coffer_relay_sessions';
/** Between attempts to listen again after the listening connection broke. */
const RELISTEN_MS = 1000;

export class PgAccountStore implements AccountStore {
  readonly kind = 'postgres' as const;
  readonly #pool: pg.Pool;
  readonly #now: () => number;
  readonly #sessionTtlMs: number;
  readonly #url: string;
  readonly #connectTimeoutMs: number;
  #sweptAt = 0;
  /** The connection that LISTENs for revocations, once someone watches; null while down. */
  #listener: pg.Client | null = null;
  #listening = false;
  #closed = false;
  #relisten: NodeJS.Timeout | null = null;
  readonly #watchers = new Set<(account: string | null) => void>();

  private constructor(pool: pg.Pool, config: Pick<PostgresConfig, 'url'> & Partial<PostgresConfig>, options: { now?: () => number; sessionTtlMs?: number }) {
    this.#pool = pool;
    this.#url = config.url;
    this.#connectTimeoutMs = config.connectTimeoutMs ?? 5000;
    this.#now = options.now ?? Date.now;
    this.#sessionTtlMs = options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
  }

  /**
   * Hears every relay's revocations (LISTEN on REVOCATIONS_CHANNEL) from a connection of
   * its own. While it is down nothing may be believed without asking: `fn(null)` at the
   * break, `live()` false until LISTEN succeeds again (retried every second).
   */
  watchRevocations(fn: (account: string | null) => void): { live(): boolean } {
    this.#watchers.add(fn);
    if (!this.#listener && !this.#relisten) void this.#listen();
    return { live: () => this.#listening };
  }

  /** Starts listening (for a caller that wants the watch live before it serves). */
  async listening(): Promise<boolean> {
    if (!this.#listener && !this.#relisten && !this.#closed) await this.#listen();
    return this.#listening;
  }

  async #listen(): Promise<void> {
    if (this.#closed) return;
    const client = new pg.Client({ connectionString: this.#url, connectionTimeoutMillis: this.#connectTimeoutMs, application_name: 'coffer-relay-revocations' });
    this.#listener = client;
    const broke = (): void => {
      if (this.#listener !== client) return;
      this.#listener = null;
      this.#listening = false;
      for (const w of this.#watchers) w(null);
      client.end().catch(() => {});
      if (!this.#closed) this.#relisten = setTimeout(() => {
        this.#relisten = null;
        void this.#listen();
      }, RELISTEN_MS).unref();
    };
    client.on('error', broke);
    client.on('end', broke);
    client.on('notification', (m) => {
      if (m.channel !== REVOCATIONS_CHANNEL || this.#listener !== client) return;
      for (const w of this.#watchers) w(m.payload ?? null);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${REVOCATIONS_CHANNEL}`);
      if (this.#listener === client && !this.#closed) this.#listening = true;
      else await client.end().catch(() => {});
    } catch {
      broke();
    }
  }

  /** Connects, applies pending migrations and returns the store. */
  static async open(config: Pick<PostgresConfig, 'url'> & Partial<PostgresConfig>, options: { now?: () => number; sessionTtlMs?: number } = {}): Promise<PgAccountStore> {
    const pool = new pg.Pool({
      connectionString: config.url,
      max: config.poolSize ?? 10,
      connectionTimeoutMillis: config.connectTimeoutMs ?? 5000,
      idleTimeoutMillis: 30_000,
      statement_timeout: config.statementTimeoutMs ?? 5000,
      query_timeout: (config.statementTimeoutMs ?? 5000) + 1000,
      application_name: 'coffer-relay',
    });
    // An idle client's error (the server restarted) must not crash the relay; the pool replaces it.
    pool.on('error', () => {});
    const store = new PgAccountStore(pool, config, options);
    try {
      await store.#migrate();
    } catch (err) {
      await pool.end().catch(() => {});
      throw err;
    }
    return store;
  }

  async #migrate(): Promise<void> {
    const c = await this.#pool.connect();
    try {
      await c.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      await c.query('CREATE TABLE IF NOT EXISTS coffer_relay_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      const { rows } = await c.query<{ v: number | null }>('SELECT max(version) AS v FROM coffer_relay_migrations');
      const have = rows[0]?.v ?? 0;
      if (have > MIGRATIONS.length) throw new Error(`the PostgreSQL account store is at schema ${have}, newer than this relay knows (${MIGRATIONS.length}): upgrade the relay`);
      for (let v = have + 1; v <= MIGRATIONS.length; v++) {
        await c.query('BEGIN');
        try {
          await c.query(MIGRATIONS[v - 1]!);
          await c.query('INSERT INTO coffer_relay_migrations (version, applied_at) VALUES ($1, $2)', [v, Date.now()]);
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK');
          throw err;
        }
      }
    } finally {
      await c.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
      c.release();
    }
  }

  /** The schema version in the database (tests, diagnostics). */
  async schemaVersion(): Promise<number> {
    const { rows } = await this.#pool.query<{ v: number | null }>('SELECT max(version) AS v FROM coffer_relay_migrations');
    return rows[0]?.v ?? 0;
  }

  async #tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.#pool.connect();
    try {
      await c.query('BEGIN');
      const r = await fn(c);
      await c.query('COMMIT');
      return r;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }

  async createAccount(publicKey: Uint8Array, passwordHash?: string): Promise<string | null> {
    const id = newAccountId();
    const now = this.#now();
    try {
      await this.#tx(async (c) => {
        await c.query('INSERT INTO accounts (id, created_at) VALUES ($1, $2)', [id, now]);
        await c.query('INSERT INTO device_keys (public_key, account, created_at) VALUES ($1, $2, $3)', [Buffer.from(publicKey), id, now]);
        if (passwordHash !== undefined) await c.query('INSERT INTO account_passwords (account, hash, updated_at) VALUES ($1, $2, $3)', [id, passwordHash, now]);
      });
    } catch (err) {
      if ((err as { code?: string }).code === '23505') return null; // unique_violation
      throw err;
    }
    return id;
  }

  async setPasswordHash(account: string, hash: string): Promise<void> {
    await this.#pool.query('INSERT INTO account_passwords (account, hash, updated_at) VALUES ($1, $2, $3) ON CONFLICT (account) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at', [account, hash, this.#now()]);
  }

  async passwordHash(account: string): Promise<string | null> {
    const { rows } = await this.#pool.query<{ hash: string }>('SELECT hash FROM account_passwords WHERE account = $1', [account]);
    return rows[0]?.hash ?? null;
  }

  async addKey(account: string, publicKey: Uint8Array): Promise<boolean> {
    const r = await this.#pool.query('INSERT INTO device_keys (public_key, account, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [Buffer.from(publicKey), account, this.#now()]);
    return r.rowCount === 1;
  }

  async listKeys(account: string): Promise<DeviceKeyInfo[]> {
    const { rows } = await this.#pool.query<{ public_key: Buffer; created_at: string; last_used_at: string | null }>('SELECT public_key, created_at, last_used_at FROM device_keys WHERE account = $1 ORDER BY created_at, public_key', [account]);
    return rows.map((k) => ({ publicKey: b64u(k.public_key), createdAt: num(k.created_at), lastUsedAt: k.last_used_at === null ? null : num(k.last_used_at) }));
  }

  async removeKey(account: string, publicKey: Uint8Array): Promise<boolean> {
    const key = Buffer.from(publicKey);
    return this.#tx(async (c) => {
      const r = await c.query('DELETE FROM device_keys WHERE account = $1 AND public_key = $2', [account, key]);
      if (r.rowCount === 0) return false;
      await c.query('DELETE FROM sessions WHERE account = $1 AND device_key = $2', [account, key]);
      await c.query('SELECT pg_notify($1, $2)', [REVOCATIONS_CHANNEL, account]);
      return true;
    });
  }

  async removeOtherKeys(account: string, keep: Uint8Array | null): Promise<number> {
    const k = keep ? Buffer.from(keep) : Buffer.alloc(0);
    return this.#tx(async (c) => {
      const r = await c.query('DELETE FROM device_keys WHERE account = $1 AND public_key <> $2', [account, k]);
      await c.query('DELETE FROM sessions WHERE account = $1 AND device_key IS NOT NULL AND device_key <> $2', [account, k]);
      await c.query('SELECT pg_notify($1, $2)', [REVOCATIONS_CHANNEL, account]);
      return r.rowCount ?? 0;
    });
  }

  async challenge(account: string): Promise<{ challenge: Uint8Array; expiresAt: number }> {
    await this.#maybeSweep();
    const challenge = randomBytes(32);
    const expiresAt = this.#now() + CHALLENGE_TTL_MS;
    await this.#pool.query('INSERT INTO challenges (digest, account, expires_at) VALUES ($1, $2, $3)', [sha(challenge), account, expiresAt]);
    return { challenge, expiresAt };
  }

  async takeChallenge(account: string, challenge: Uint8Array): Promise<boolean> {
    // Single use across every relay: the row is gone the moment one of them reads it.
    const { rows } = await this.#pool.query<{ expires_at: string }>('DELETE FROM challenges WHERE digest = $1 AND account = $2 RETURNING expires_at', [sha(challenge), account]);
    return rows.length === 1 && num(rows[0]!.expires_at) >= this.#now();
  }

  async proveKey(account: string, challenge: Uint8Array, signature: Uint8Array): Promise<KeyProof> {
    if (!(await this.takeChallenge(account, challenge))) return { result: 'no-challenge' };
    const { rows } = await this.#pool.query<{ public_key: Buffer }>('SELECT public_key FROM device_keys WHERE account = $1', [account]);
    const key = signingKey(rows.map((r) => r.public_key), challenge, signature);
    if (!key) return { result: 'bad-signature' };
    await this.#pool.query('UPDATE device_keys SET last_used_at = $1 WHERE public_key = $2', [this.#now(), key]);
    return { result: 'ok', key };
  }

  async openSession(account: string, origin: SessionOrigin): Promise<{ token: string; expiresAt: number }> {
    const token = newSessionToken();
    const expiresAt = this.#now() + this.#sessionTtlMs;
    await this.#pool.query('INSERT INTO sessions (digest, account, expires_at, device_key) VALUES ($1, $2, $3, $4)', [sha(token), account, expiresAt, 'key' in origin ? Buffer.from(origin.key) : null]);
    return { token, expiresAt };
  }

  async session(token: string): Promise<string | null> {
    return (await this.sessionRecord(token))?.account ?? null;
  }

  async sessionRecord(token: string): Promise<{ account: string; expiresAt: number } | null> {
    // A named (prepared once per connection) statement: every forwarded vault message
    // checks its session, and an unnamed one is parsed and planned again each time.
    const { rows } = await this.#pool.query<{ account: string; expires_at: string }>({ name: 'coffer-relay-session', text: 'SELECT account, expires_at FROM sessions WHERE digest = $1', values: [sha(token)] });
    const row = rows[0];
    const expiresAt = row ? num(row.expires_at) : 0;
    if (!row || expiresAt <= this.#now()) return null;
    return { account: row.account, expiresAt };
  }

  async sessionKey(token: string): Promise<Buffer | null> {
    const { rows } = await this.#pool.query<{ device_key: Buffer | null }>('SELECT device_key FROM sessions WHERE digest = $1', [sha(token)]);
    return rows[0]?.device_key ?? null;
  }

  async revokeSession(token: string): Promise<boolean> {
    // One statement: the delete and its notification (delivered at commit) together.
    const r = await this.#pool.query(`WITH d AS (DELETE FROM sessions WHERE digest = $1 RETURNING account) SELECT pg_notify('${REVOCATIONS_CHANNEL}', account) FROM d`, [sha(token)]);
    return (r.rowCount ?? 0) > 0;
  }

  async revokeOtherSessions(account: string, keep: string | null): Promise<number> {
    // A row per session ended; PostgreSQL folds the identical notifications into one.
    const r = await this.#pool.query(`WITH d AS (DELETE FROM sessions WHERE account = $1 AND digest <> $2 RETURNING account) SELECT pg_notify('${REVOCATIONS_CHANNEL}', account) FROM d`, [account, keep === null ? Buffer.alloc(0) : sha(keep)]);
    return r.rowCount ?? 0;
  }

  async exists(account: string): Promise<boolean> {
    const { rows } = await this.#pool.query('SELECT 1 FROM accounts WHERE id = $1', [account]);
    return rows.length === 1;
  }

  async take(bucket: string, key: string, rule: BucketRule, force = false): Promise<BucketTake> {
    const k = `${bucket} ${key}`;
    // Row lock: concurrent takes from several relays serialise on the bucket.
    return this.#tx(async (c) => {
      await c.query('INSERT INTO buckets (key, tokens, at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING', [k, rule.burst, this.#now()]);
      const { rows } = await c.query<{ tokens: number; at: string }>('SELECT tokens, at FROM buckets WHERE key = $1 FOR UPDATE', [k]);
      const next = bucketAfterTake({ tokens: rows[0]!.tokens, at: num(rows[0]!.at) }, rule, this.#now(), force);
      await c.query('UPDATE buckets SET tokens = $2, at = $3 WHERE key = $1', [k, next.tokens, next.at]);
      return { wait: next.wait, tokens: next.tokens };
    });
  }

  async refund(bucket: string, key: string, rule: BucketRule): Promise<void> {
    await this.#pool.query('UPDATE buckets SET tokens = LEAST($2::double precision, tokens + 1) WHERE key = $1', [`${bucket} ${key}`, rule.burst]);
  }

  async #maybeSweep(): Promise<void> {
    const now = this.#now();
    if (now - this.#sweptAt < 60_000) return;
    this.#sweptAt = now;
    await this.#pool.query('DELETE FROM challenges WHERE expires_at < $1', [now]);
    await this.#pool.query('DELETE FROM sessions WHERE expires_at < $1', [now]);
    await this.#pool.query('DELETE FROM buckets WHERE at < $1', [now - BUCKET_IDLE_MS]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#listening = false;
    if (this.#relisten) clearTimeout(this.#relisten);
    const l = this.#listener;
    this.#listener = null;
    await l?.end().catch(() => {});
    await this.#pool.end();
  }
}
