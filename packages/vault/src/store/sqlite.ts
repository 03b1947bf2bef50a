/**
 * The embedded record store on SQLite (better-sqlite3): WAL journal with
 * `synchronous=FULL`, so a commit is on disk (fsync of the WAL) before it resolves.
 *
 * Writes are group-committed on a writer thread (sqlite-writer.ts, its own connection):
 * while one batch commits there, every compare-and-swap queued meanwhile waits and goes
 * in the next batch, in a single transaction (each still checks its own expected
 * version), so many accounts share one fsync and the vault's event loop keeps working
 * during the fsync. Nothing resolves before its transaction has committed. Reads run
 * on this thread's connection and see every committed batch.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { WriterOp, WriterReply } from './sqlite-writer.js';
import { StoreError, type CasResult, type RecordStore, type StoredRecord } from './store.js';

type Op = WriterOp & { resolve: (r: string | true | null) => void; reject: (e: Error) => void };

export class SqliteRecordStore implements RecordStore {
  readonly name: string;
  readonly #db: Database.Database;
  readonly #select: Database.Statement<[string], { value: Buffer; revision: number }>;
  readonly #writer: Worker;
  #queue: Op[] = [];
  /** The batch the writer is committing (at most one at a time). */
  #inFlight: { id: number; ops: Op[] } | null = null;
  #nextId = 0;
  #scheduled = false;
  #closed = false;
  #failed: Error | null = null;
  #idle: (() => void) | null = null;

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
    this.#writer = new Worker(new URL('./sqlite-writer.js', import.meta.url), { workerData: { path } });
    this.#writer.on('message', (reply: WriterReply) => this.#done(reply));
    this.#writer.on('error', (err) => this.#fail(new StoreError(`sqlite writer failed: ${err.message}`)));
    this.#writer.on('exit', () => this.#fail(new StoreError('sqlite writer exited')));
    // The writer must not keep an idle process alive; it is ref'd while a batch runs.
    this.#writer.unref();
  }

  #check(): void {
    if (this.#closed) throw new StoreError('store is closed');
    if (this.#failed) throw this.#failed;
  }

  async get(account: string): Promise<StoredRecord | null> {
    this.#check();
    const row = this.#select.get(account);
    return row ? { value: new Uint8Array(row.value), version: String(row.revision) } : null;
  }

  compareAndPut(account: string, value: Uint8Array, expected: string | null): Promise<CasResult> {
    this.#check();
    return new Promise<string | true | null>((resolve, reject) => this.#enqueue({ kind: 'put', account, value, expected, resolve, reject })).then((r) =>
      typeof r === 'string' ? { ok: true, version: r } : { ok: false },
    );
  }

  compareAndDelete(account: string, expected: string): Promise<boolean> {
    this.#check();
    return new Promise<string | true | null>((resolve, reject) => this.#enqueue({ kind: 'delete', account, expected, resolve, reject })).then((r) => r === true);
  }

  #enqueue(op: Op): void {
    this.#queue.push(op);
    // Gather what this turn of the event loop queues; a batch already committing makes
    // the next one wait for it (and grow) anyway.
    if (!this.#scheduled && !this.#inFlight) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#send();
      });
    }
  }

  #send(): void {
    if (this.#inFlight || this.#queue.length === 0) return;
    const ops = this.#queue;
    this.#queue = [];
    const id = this.#nextId++;
    this.#inFlight = { id, ops };
    this.#writer.ref();
    this.#writer.postMessage({ id, ops: ops.map((o): WriterOp => (o.kind === 'put' ? { kind: 'put', account: o.account, value: o.value, expected: o.expected } : { kind: 'delete', account: o.account, expected: o.expected })) });
  }

  #done(reply: WriterReply): void {
    const batch = this.#inFlight;
    if (!batch || batch.id !== reply.id) return;
    this.#inFlight = null;
    this.#writer.unref();
    if ('error' in reply) {
      const e = new StoreError(`sqlite commit failed: ${reply.error}`);
      for (const op of batch.ops) op.reject(e);
    } else {
      batch.ops.forEach((op, i) => op.resolve(reply.results[i]!));
    }
    this.#send();
    if (!this.#inFlight && this.#queue.length === 0) this.#idle?.();
  }

  #fail(err: Error): void {
    if (this.#failed) return;
    this.#failed = err;
    const ops = [...(this.#inFlight?.ops ?? []), ...this.#queue];
    this.#inFlight = null;
    this.#queue = [];
    for (const op of ops) op.reject(err);
    this.#idle?.();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#failed && (this.#inFlight || this.#queue.length > 0)) {
      await new Promise<void>((resolve) => {
        this.#idle = resolve;
        this.#send();
      });
    }
    if (!this.#failed) {
      this.#failed = new StoreError('store is closed');
      this.#writer.ref();
      const exited = new Promise<void>((resolve) => this.#writer.once('exit', () => resolve()));
      this.#writer.postMessage({ close: true });
      await exited;
    }
    this.#db.close();
  }
}
