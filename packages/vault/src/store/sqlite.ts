/**
 * The embedded record store on SQLite (better-sqlite3) in WAL mode, durable like
 * `synchronous=FULL`: no write resolves before the WAL holding its commit has been
 * fsynced.
 *
 * Group commit without blocking the event loop: every compare-and-swap queued during
 * one turn of the loop runs in a single transaction (each still checks its own expected
 * version) on this thread with `synchronous=NORMAL` — SQLite does not sync at commit,
 * only around checkpoints (it syncs the WAL before and the database after each one) —
 * and then the WAL file is fsynced on libuv's thread pool; the writes resolve when an
 * fsync that started after their commit has finished. NORMAL plus that fsync before
 * anything resolves is what FULL does at every commit, without holding the event loop
 * for the fsync. Commits made while an fsync runs share the next one. If an fsync fails
 * the store fails: nothing more resolves (the state on disk is unknown). Reads see
 * committed transactions; a write not yet fsynced could only be read by a request of
 * the same account, and the server runs each account's requests one after another.
 *
 * Erasure at rest: `secure_delete` is on, so SQLite overwrites deleted content (a
 * replaced record's old cell, freed pages) with zeros. After an erasure (a put with
 * `erasure`, or a delete) is fsynced, the WAL — which still holds the old pages — is
 * checkpointed into the database and truncated to zero bytes before the write resolves.
 *
 * The sweep index is a table (`sweeps`) written through the same group commit.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, fsync, fsyncSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { LogConflictError, StoreError, type BatchChange, type CasResult, type LogStore, type PutOptions, type RecordStore, type RecordVersion, type StoredRecord, type SweepEntry } from './store.js';

type Op =
  | { kind: 'put'; account: string; value: Uint8Array; expected: RecordVersion | null; erasure: boolean; resolve: (r: CasResult) => void; reject: (e: Error) => void }
  | { kind: 'delete'; account: string; expected: RecordVersion; resolve: (ok: boolean) => void; reject: (e: Error) => void }
  | { kind: 'schedule'; account: string; atMs: number; resolve: (r: undefined) => void; reject: (e: Error) => void }
  | { kind: 'clear'; account: string; atMs: number; resolve: (r: undefined) => void; reject: (e: Error) => void }
  | { kind: 'batch'; changes: readonly BatchChange[]; index: number; entry: Uint8Array; resolve: (r: Map<string, RecordVersion>) => void; reject: (e: Error) => void };
type OpResult = CasResult | boolean | undefined | Map<string, RecordVersion> | LogConflictError;

/** Log entries kept behind the head (older ones are pruned in the batch that passes them). */
const LOG_KEEP = 64;

export interface SqliteStoreOptions {
  /**
   * Hold SQLite's lock for the life of this store (`locking_mode = EXCLUSIVE`, set before
   * WAL is used, so no shared memory either): no other process can read or write the
   * file while it is open. Rollback protection (spec §13) needs a one-writer store.
   */
  readonly exclusive?: boolean;
  /** TEST ONLY: the fsync of the WAL file descriptor (default `node:fs` `fsync`, on the thread pool). */
  readonly fsync?: (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => void;
}

/** A committed op and its result, waiting for the fsync that makes it durable. */
type Committed = { op: Op; result: OpResult };

export class SqliteRecordStore implements RecordStore, LogStore {
  readonly name: string;
  readonly #db: Database.Database;
  readonly #walFd: number;
  readonly #fsync: NonNullable<SqliteStoreOptions['fsync']>;
  readonly #select: Database.Statement<[string], { value: Buffer; revision: number }>;
  readonly #insert: Database.Statement<[string, Buffer, number]>;
  readonly #update: Database.Statement<[Buffer, number, string, number]>;
  readonly #delete: Database.Statement<[string, number]>;
  readonly #bump: Database.Statement<[], { revision: number }>;
  readonly #bumpBy: Database.Statement<[number], { revision: number }>;
  readonly #schedule: Database.Statement<[string, number]>;
  readonly #clear: Database.Statement<[string, number]>;
  readonly #due: Database.Statement<[number, number], { account: string; at_ms: number }>;
  readonly #logHead: Database.Statement<[], { idx: number | null }>;
  readonly #logInsert: Database.Statement<[number, Buffer]>;
  readonly #logPrune: Database.Statement<[number]>;
  readonly #logRead: Database.Statement<[number], { entry: Buffer }>;
  readonly #upsert: Database.Statement<[string, Buffer, number]>;
  readonly #deleteAny: Database.Statement<[string]>;
  readonly #all: Database.Statement<[], { account: string; value: Buffer }>;
  /** An erasure committed since the last complete WAL checkpoint. */
  #checkpointOwed = false;
  #queue: Op[] = [];
  #scheduled = false;
  /** Committed, not yet covered by a finished fsync. */
  #unsynced: Committed[] = [];
  #syncing = false;
  #failed: Error | null = null;
  #closed = false;
  #idle: (() => void) | null = null;

  /** Opens (creating if needed) the database file at `path`. */
  constructor(
    readonly path: string,
    options: SqliteStoreOptions = {},
  ) {
    this.name = `sqlite:${path}`;
    this.#fsync = options.fsync ?? fsync;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // Readable by the vault's user only (as the relay's database): the records are sealed,
    // but who was enrolled and each record's size and revision are no one else's to read.
    // SQLite gives the -wal and -shm files the database file's mode; files an earlier
    // version created with the umask's are narrowed too.
    closeSync(openSync(path, 'a', 0o600));
    for (const f of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    this.#db = new Database(path);
    if (options.exclusive) {
      this.#db.pragma('locking_mode = EXCLUSIVE');
      this.#db.pragma('busy_timeout = 1000');
      try {
        this.#db.exec('BEGIN EXCLUSIVE; COMMIT;'); // takes the lock now, and keeps it
      } catch (err) {
        this.#db.close();
        throw new StoreError(`sqlite: ${path} is in use by another process (${(err as Error).message}): a SQLite store is served by exactly one vault`);
      }
    }
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = FULL'); // while the schema is created
    this.#db.pragma('busy_timeout = 5000');
    // Deleted and overwritten content is zeroed in the file, not left in free space.
    this.#db.pragma('secure_delete = ON');
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS records (
        account  TEXT PRIMARY KEY,
        value    BLOB NOT NULL,
        revision INTEGER NOT NULL
      ) STRICT;
      -- One store-wide revision counter (like etcd's): a record's version never repeats,
      -- even after delete and re-create, so compare-and-swap has no ABA problem.
      CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL) STRICT;
      INSERT OR IGNORE INTO meta (id, revision) VALUES (1, 0);
      -- The sweep index (store.ts SweepEntry): due entries are read in at_ms order.
      CREATE TABLE IF NOT EXISTS sweeps (
        account TEXT NOT NULL,
        at_ms   INTEGER NOT NULL,
        PRIMARY KEY (account, at_ms)
      ) STRICT;
      CREATE INDEX IF NOT EXISTS sweeps_due ON sweeps (at_ms);
      -- The rollback-protection log (spec §13): committed with the records it covers.
      CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL) STRICT;
    `);
    // The WAL file exists once the connection has used the database in WAL mode; it
    // keeps its inode while this connection is open (SQLite rewinds it, never replaces it).
    this.#walFd = openSync(`${path}-wal`, 'r');
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir); // the WAL file's directory entry
    } finally {
      closeSync(dir);
    }
    this.#db.pragma('synchronous = NORMAL');
    this.#select = this.#db.prepare('SELECT value, revision FROM records WHERE account = ?');
    this.#insert = this.#db.prepare('INSERT INTO records (account, value, revision) VALUES (?, ?, ?) ON CONFLICT (account) DO NOTHING');
    this.#update = this.#db.prepare('UPDATE records SET value = ?, revision = ? WHERE account = ? AND revision = ?');
    this.#delete = this.#db.prepare('DELETE FROM records WHERE account = ? AND revision = ?');
    this.#bump = this.#db.prepare('UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision');
    this.#bumpBy = this.#db.prepare('UPDATE meta SET revision = revision + ? WHERE id = 1 RETURNING revision');
    this.#schedule = this.#db.prepare('INSERT OR IGNORE INTO sweeps (account, at_ms) VALUES (?, ?)');
    this.#clear = this.#db.prepare('DELETE FROM sweeps WHERE account = ? AND at_ms = ?');
    this.#due = this.#db.prepare('SELECT account, at_ms FROM sweeps WHERE at_ms <= ? ORDER BY at_ms LIMIT ?');
    this.#logHead = this.#db.prepare('SELECT max(idx) AS idx FROM log');
    this.#logInsert = this.#db.prepare('INSERT INTO log (idx, entry) VALUES (?, ?)');
    this.#logPrune = this.#db.prepare('DELETE FROM log WHERE idx < ?');
    this.#logRead = this.#db.prepare('SELECT entry FROM log WHERE idx >= ? ORDER BY idx');
    this.#upsert = this.#db.prepare('INSERT INTO records (account, value, revision) VALUES (?, ?, ?) ON CONFLICT (account) DO UPDATE SET value = excluded.value, revision = excluded.revision');
    this.#deleteAny = this.#db.prepare('DELETE FROM records WHERE account = ?');
    this.#all = this.#db.prepare('SELECT account, value FROM records');
  }

  #check(): void {
    if (this.#closed) throw new StoreError('store is closed');
    if (this.#failed) throw this.#failed;
  }

  async get(account: string): Promise<StoredRecord | null> {
    this.#check();
    const row = this.#select.get(account);
    // better-sqlite3 returns a fresh Buffer per row (its own memory): a view, not a copy.
    return row ? { value: new Uint8Array(row.value.buffer, row.value.byteOffset, row.value.byteLength), version: String(row.revision) } : null;
  }

  // async: a closed or failed store rejects, never throws synchronously.
  async compareAndPut(account: string, value: Uint8Array, expected: RecordVersion | null, options: PutOptions = {}): Promise<CasResult> {
    this.#check();
    return new Promise((resolve, reject) => this.#enqueue({ kind: 'put', account, value, expected, erasure: options.erasure === true, resolve, reject }));
  }

  async compareAndDelete(account: string, expected: RecordVersion): Promise<boolean> {
    this.#check();
    return new Promise((resolve, reject) => this.#enqueue({ kind: 'delete', account, expected, resolve, reject }));
  }

  async scheduleSweep(account: string, atMs: number): Promise<void> {
    this.#check();
    if (!Number.isSafeInteger(atMs)) throw new RangeError(`atMs: not an integer: ${atMs}`);
    return new Promise((resolve, reject) => this.#enqueue({ kind: 'schedule', account, atMs, resolve, reject }));
  }

  async dueSweeps(nowMs: number, limit: number): Promise<SweepEntry[]> {
    this.#check();
    return this.#due.all(Math.floor(nowMs), limit).map((r) => ({ account: r.account, atMs: r.at_ms }));
  }

  async clearSweep(entry: SweepEntry): Promise<void> {
    this.#check();
    return new Promise((resolve, reject) => this.#enqueue({ kind: 'clear', account: entry.account, atMs: entry.atMs, resolve, reject }));
  }

  async readLog(fromIndex: number): Promise<Uint8Array[]> {
    this.#check();
    return this.#logRead.all(fromIndex).map((r) => new Uint8Array(r.entry));
  }

  async listRecords(): Promise<Array<readonly [string, Uint8Array]>> {
    this.#check();
    return this.#all.all().map((r) => [r.account, new Uint8Array(r.value)] as const);
  }

  async commitBatch(changes: readonly BatchChange[], index: number, entry: Uint8Array): Promise<Map<string, RecordVersion>> {
    this.#check();
    return new Promise((resolve, reject) => this.#enqueue({ kind: 'batch', changes, index, entry, resolve, reject }));
  }

  #enqueue(op: Op): void {
    this.#queue.push(op);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #apply(op: Op): OpResult {
    if (op.kind === 'batch') {
      const head = this.#logHead.get()?.idx ?? 0;
      if (head !== op.index - 1) return new LogConflictError(`sqlite: the log's head is ${head}, not ${op.index - 1}: another writer, or the store changed under this vault`);
      const versions = new Map<string, RecordVersion>();
      // One revision bump for the whole entry (its puts take consecutive revisions), not one
      // statement per record.
      let puts = 0;
      for (const c of op.changes) if (c.value !== null) puts++;
      let revision = puts > 0 ? this.#bumpBy.get(puts)!.revision - puts : 0;
      for (const c of op.changes) {
        if (c.value === null) {
          this.#deleteAny.run(c.account);
          continue;
        }
        revision++;
        this.#upsert.run(c.account, Buffer.from(c.value.buffer, c.value.byteOffset, c.value.byteLength), revision);
        versions.set(c.account, String(revision));
      }
      this.#logInsert.run(op.index, Buffer.from(op.entry.buffer, op.entry.byteOffset, op.entry.byteLength));
      if (op.index > LOG_KEEP && op.index % LOG_KEEP === 0) this.#logPrune.run(op.index - LOG_KEEP);
      return versions;
    }
    if (op.kind === 'schedule') {
      this.#schedule.run(op.account, op.atMs);
      return undefined;
    }
    if (op.kind === 'clear') {
      this.#clear.run(op.account, op.atMs);
      return undefined;
    }
    const expected = op.expected === null ? null : Number(op.expected);
    if (expected !== null && !Number.isSafeInteger(expected)) return op.kind === 'put' ? { ok: false } : false;
    if (op.kind === 'delete') return this.#delete.run(op.account, expected!).changes === 1;
    const revision = this.#bump.get()!.revision;
    const value = Buffer.from(op.value.buffer, op.value.byteOffset, op.value.byteLength);
    const changes = expected === null ? this.#insert.run(op.account, value, revision).changes : this.#update.run(value, revision, op.account, expected).changes;
    return changes === 1 ? { ok: true, version: String(revision) } : { ok: false };
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    this.#queue = [];
    if (batch.length === 0) return;
    if (this.#failed) {
      for (const op of batch) op.reject(this.#failed);
      return;
    }
    let results: OpResult[];
    try {
      results = this.#db.transaction(() => batch.map((op) => this.#apply(op)))();
    } catch (err) {
      const e = new StoreError(`sqlite commit failed: ${(err as Error).message}`);
      for (const op of batch) op.reject(e);
      return;
    }
    batch.forEach((op, i) => {
      const result = results[i];
      if ((op.kind === 'put' && op.erasure && (result as CasResult).ok) || (op.kind === 'delete' && result === true)) this.#checkpointOwed = true;
      if (op.kind === 'batch' && result instanceof Map && op.changes.some((c) => c.erasure || c.value === null)) this.#checkpointOwed = true;
      this.#unsynced.push({ op, result });
    });
    this.#sync();
  }

  /** Starts an fsync of the WAL for everything committed so far, unless one is running. */
  #sync(): void {
    if (this.#syncing || this.#unsynced.length === 0) return;
    const covered = this.#unsynced;
    this.#unsynced = [];
    this.#syncing = true;
    this.#fsync(this.#walFd, (err) => {
      this.#syncing = false;
      if (err && !this.#failed) this.#failed = new StoreError(`sqlite: fsync of the WAL failed: ${err.message}`);
      if (this.#failed) {
        for (const c of [...covered, ...this.#unsynced.splice(0)]) c.op.reject(this.#failed);
      } else {
        if (this.#checkpointOwed) this.#checkpoint();
        for (const { op, result } of covered) {
          if (op.kind === 'batch') {
            if (result instanceof LogConflictError) op.reject(result);
            else op.resolve(result as Map<string, RecordVersion>);
          } else if (op.kind === 'put') op.resolve(result as CasResult);
          else if (op.kind === 'delete') op.resolve(result as boolean);
          else op.resolve(undefined);
        }
      }
      this.#sync();
      if (!this.#syncing && this.#queue.length === 0 && !this.#scheduled) this.#idle?.();
    });
  }

  /**
   * Copies the WAL into the database and truncates it to zero bytes, so the pages an
   * erasure replaced are gone from the WAL (and, zeroed by secure_delete, from the
   * database). Runs after the erasure's commit is fsynced; everything committed so far
   * is in the database afterwards (SQLite syncs it during the checkpoint). If another
   * connection (an operator's sqlite3 shell) holds a read, the checkpoint cannot finish:
   * it is tried again after the next commit.
   */
  #checkpoint(): void {
    try {
      const r = this.#db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
      if (r[0]?.busy === 0) this.#checkpointOwed = false;
    } catch {
      /* SQLITE_BUSY and the like: owed, retried after the next commit */
    }
  }

  /** TEST/OPS: whether an erasure still waits for its WAL checkpoint. */
  get checkpointOwed(): boolean {
    return this.#checkpointOwed;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    if (this.#syncing || this.#unsynced.length > 0) {
      await new Promise<void>((resolve) => {
        this.#idle = resolve;
        this.#sync();
      });
    }
    closeSync(this.#walFd);
    this.#db.close();
  }
}
