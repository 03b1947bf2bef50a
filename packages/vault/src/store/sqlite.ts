/**
 * The embedded record store on SQLite (better-sqlite3): WAL journal with
 * `synchronous=FULL`, so a commit is on disk (fsync of the WAL) before it resolves.
 *
 * Writes are group-committed: every compare-and-swap queued during one turn of the
 * event loop runs in a single transaction (each still checks its own expected version),
 * so many accounts share one fsync. Nothing resolves before that transaction commits.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { StoreError, type CasResult, type RecordStore, type RecordVersion, type StoredRecord } from './store.js';

type Op =
  | { kind: 'put'; account: string; value: Uint8Array; expected: RecordVersion | null; resolve: (r: CasResult) => void; reject: (e: Error) => void }
  | { kind: 'delete'; account: string; expected: RecordVersion; resolve: (ok: boolean) => void; reject: (e: Error) => void };

export class SqliteRecordStore implements RecordStore {
  readonly name: string;
  readonly #db: Database.Database;
  readonly #select: Database.Statement<[string], { value: Buffer; revision: number }>;
  readonly #insert: Database.Statement<[string, Buffer, number]>;
  readonly #update: Database.Statement<[Buffer, number, string, number]>;
  readonly #delete: Database.Statement<[string, number]>;
  readonly #bump: Database.Statement<[], { revision: number }>;
  #queue: Op[] = [];
  #scheduled = false;
  #closed = false;

  /** Opens (creating if needed) the database file at `path`. */
  constructor(readonly path: string) {
    this.name = `sqlite:${path}`;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#db = new Database(path);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = FULL');
    this.#db.pragma('busy_timeout = 5000');
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
    `);
    this.#select = this.#db.prepare('SELECT value, revision FROM records WHERE account = ?');
    this.#insert = this.#db.prepare('INSERT INTO records (account, value, revision) VALUES (?, ?, ?) ON CONFLICT (account) DO NOTHING');
    this.#update = this.#db.prepare('UPDATE records SET value = ?, revision = ? WHERE account = ? AND revision = ?');
    this.#delete = this.#db.prepare('DELETE FROM records WHERE account = ? AND revision = ?');
    this.#bump = this.#db.prepare('UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision');
  }

  #check(): void {
    if (this.#closed) throw new StoreError('store is closed');
  }

  async get(account: string): Promise<StoredRecord | null> {
    this.#check();
    const row = this.#select.get(account);
    return row ? { value: new Uint8Array(row.value), version: String(row.revision) } : null;
  }

  compareAndPut(account: string, value: Uint8Array, expected: RecordVersion | null): Promise<CasResult> {
    this.#check();
    return new Promise((resolve, reject) => this.#enqueue({ kind: 'put', account, value, expected, resolve, reject }));
  }

  compareAndDelete(account: string, expected: RecordVersion): Promise<boolean> {
    this.#check();
    return new Promise((resolve, reject) => this.#enqueue({ kind: 'delete', account, expected, resolve, reject }));
  }

  #enqueue(op: Op): void {
    this.#queue.push(op);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #apply(op: Op): CasResult | boolean {
    const expected = op.expected === null ? null : Number(op.expected);
    if (expected !== null && !Number.isSafeInteger(expected)) return op.kind === 'put' ? { ok: false } : false;
    if (op.kind === 'delete') return this.#delete.run(op.account, expected!).changes === 1;
    const revision = this.#bump.get()!.revision;
    const changes = expected === null ? this.#insert.run(op.account, Buffer.from(op.value), revision).changes : this.#update.run(Buffer.from(op.value), revision, op.account, expected).changes;
    return changes === 1 ? { ok: true, version: String(revision) } : { ok: false };
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    this.#queue = [];
    if (batch.length === 0) return;
    let results: (CasResult | boolean)[];
    try {
      results = this.#db.transaction(() => batch.map((op) => this.#apply(op)))();
    } catch (err) {
      const e = new StoreError(`sqlite commit failed: ${(err as Error).message}`);
      for (const op of batch) op.reject(e);
      return;
    }
    batch.forEach((op, i) => {
      if (op.kind === 'put') op.resolve(results[i] as CasResult);
      else op.resolve(results[i] as boolean);
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    this.#db.close();
  }
}
