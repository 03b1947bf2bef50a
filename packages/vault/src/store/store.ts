/**
 * Where sealed account records live. The store is untrusted for secrecy (records are
 * sealed by the HSM) but trusted, in this version, not to roll records back
 * (docs/threat-model.md). Every write is a compare-and-swap on the record's version, so
 * concurrent requests for one account — on one node or across a fleet — serialize: the
 * loser re-reads and decides again, never answering from stale state.
 *
 * Implementations: SQLite (embedded, `sqlite.ts`); etcd (fleet, later) maps `version`
 * to the key's mod_revision.
 */

/**
 * Opaque to callers: only the store compares versions. Versions of one key never
 * repeat, even across delete and re-create (no ABA).
 */
export type RecordVersion = string;

export interface StoredRecord {
  readonly value: Uint8Array;
  readonly version: RecordVersion;
}

export type CasResult = { readonly ok: true; readonly version: RecordVersion } | { readonly ok: false };

export interface PutOptions {
  /**
   * This write erases key material (the erased tombstone replaces a record). After it
   * commits, the store also removes the older versions it keeps around, within a bounded
   * time: SQLite checkpoints and truncates its WAL (old pages are zeroed by
   * `secure_delete`); etcd compacts its history past this revision. A delete is always
   * treated as an erasure. See docs/operations.md, "Erasure at rest".
   */
  readonly erasure?: boolean;
}

/**
 * One entry of the sweep index: at `atMs` (the vault's clock) the record of `account`
 * may hold a spent guess limit whose login has ended, and must then be erased even if
 * nobody calls again (VaultCore.sweep). Entries are never overwritten: scheduling again
 * adds one, and clearing names the exact entry, so two nodes cannot lose each other's.
 */
export interface SweepEntry {
  readonly account: string;
  readonly atMs: number;
}

export interface RecordStore {
  /** For logs and metrics, e.g. `sqlite:/var/lib/coffer/vault.db`. */
  readonly name: string;
  get(account: string): Promise<StoredRecord | null>;
  /**
   * A cheaper read that may be stale (etcd: `serializable`, answered by one member from
   * its own state, no quorum round). Only for callers that verify what they read against
   * the log root and fall back to `get` when it does not match (VaultService, rollback path).
   */
  getMaybeStale?(account: string): Promise<StoredRecord | null>;
  /**
   * Writes `value` if the record's current version is `expected` (`null`: only if there
   * is no record). Durable when the promise resolves `ok`.
   */
  compareAndPut(account: string, value: Uint8Array, expected: RecordVersion | null, options?: PutOptions): Promise<CasResult>;
  /** Deletes the record if its current version is `expected`. Durable when it resolves `true`. */
  compareAndDelete(account: string, expected: RecordVersion): Promise<boolean>;
  /** Adds a durable sweep index entry (durable when the promise resolves). */
  scheduleSweep(account: string, atMs: number): Promise<void>;
  /** Entries due at `nowMs` (atMs <= nowMs), oldest first, at most `limit`. */
  dueSweeps(nowMs: number, limit: number): Promise<SweepEntry[]>;
  /** Removes exactly this entry (not a later one for the same account). */
  clearSweep(entry: SweepEntry): Promise<void>;
  close(): Promise<void>;
}

/** The store cannot be reached or failed to commit: the request fails, nothing is answered. */
export class StoreError extends Error {
  override readonly name: string = 'StoreError';
}

/** One record change of a logged batch (spec §13.3): `value` null deletes the record. */
export interface BatchChange {
  readonly account: string;
  readonly value: Uint8Array | null;
  /** As PutOptions.erasure (a delete always is one). */
  readonly erasure?: boolean;
}

/**
 * A store that keeps the rollback-protection log next to the records (spec §13): a
 * batch of record changes and the log entry that authenticates them are committed in
 * ONE transaction, fenced on the log's head.
 */
export interface LogStore {
  /** The most record changes one batch may hold (a store's transaction limit); none: unlimited. */
  readonly maxBatchChanges?: number;
  /** The stored log entries with index ≥ `fromIndex`, in index order (whatever the store holds: verified by the caller). */
  readLog(fromIndex: number): Promise<Uint8Array[]>;
  /** Every stored record. */
  listRecords(): Promise<Array<readonly [string, Uint8Array]>>;
  /**
   * Commits `changes` and the entry at `index` atomically, if the log's newest entry is
   * `index - 1` (none for index 1); else nothing and LogConflictError. Writes records
   * unconditionally (the log's head is the fence). Durable when it resolves; returns the
   * new version of each record put.
   */
  commitBatch(changes: readonly BatchChange[], index: number, entry: Uint8Array): Promise<Map<string, RecordVersion>>;
}

export function isLogStore(s: RecordStore): s is RecordStore & LogStore {
  const l = s as Partial<LogStore>;
  return typeof l.readLog === 'function' && typeof l.commitBatch === 'function' && typeof l.listRecords === 'function';
}

/** The log's head was not where the appender expected: another writer, or a store rolled back under it. */
export class LogConflictError extends StoreError {
  override readonly name = 'LogConflictError';
}
