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

export interface RecordStore {
  /** For logs and metrics, e.g. `sqlite:/var/lib/coffer/vault.db`. */
  readonly name: string;
  get(account: string): Promise<StoredRecord | null>;
  /**
   * Writes `value` if the record's current version is `expected` (`null`: only if there
   * is no record). Durable when the promise resolves `ok`.
   */
  compareAndPut(account: string, value: Uint8Array, expected: RecordVersion | null): Promise<CasResult>;
  /** Deletes the record if its current version is `expected`. Durable when it resolves `true`. */
  compareAndDelete(account: string, expected: RecordVersion): Promise<boolean>;
  close(): Promise<void>;
}

/** The store cannot be reached or failed to commit: the request fails, nothing is answered. */
export class StoreError extends Error {
  override readonly name = 'StoreError';
}
