/**
 * The fleet's record store on etcd (3.4+), through etcd's v3 JSON gateway over HTTP
 * (`POST /v3/kv/range`, `/v3/kv/txn`): no client library, `fetch` with a deadline on
 * every call, several endpoints with failover.
 *
 * Versions. A record's version is its key's `mod_revision`. etcd revisions are one
 * store-wide counter that only grows, so a key deleted and created again gets a larger
 * mod_revision than any it had before: a version never repeats (no ABA).
 * "Absent" is compared as `create_revision == 0`.
 *
 * Consistency. Reads are linearizable (etcd's default, not `serializable`): they go
 * through the leader's read index, so a member cut off from the quorum cannot answer
 * from stale state; it times out and we fail over, or report the store unavailable.
 * A txn resolves only after the quorum committed it, so the vault's "commit the guess,
 * then release KE2" holds across the fleet.
 *
 * Ambiguous writes. A txn that times out or loses its connection may still commit.
 * Before retrying on another endpoint we re-read the key: sealed records carry a fresh
 * random nonce, so byte-equality with what we wrote means it was our write. Otherwise
 * the retry is a compare-and-swap on the old version and cannot apply twice. The worst
 * case is a guess counted whose KE2 never left (the user loses one guess) — never a
 * guess answered but not counted.
 */
import { equalBytes } from '@coffer/protocol';
import { StoreError, type CasResult, type RecordStore, type RecordVersion, type StoredRecord } from './store.js';

export interface EtcdStoreOptions {
  /** Client URLs, e.g. `http://127.0.0.1:2379`. Tried in order of health. */
  readonly endpoints: readonly string[];
  /** Key prefix for this fleet's records (default `coffer/vault/`). */
  readonly prefix?: string;
  /** Deadline of one HTTP call to one endpoint (default 2000 ms). */
  readonly timeoutMs?: number;
}

export const DEFAULT_ETCD_PREFIX = 'coffer/vault/';
export const DEFAULT_ETCD_TIMEOUT_MS = 2000;
/** After a failure, an endpoint is tried last for this long. */
const SUSPECT_MS = 3000;

interface KeyValue {
  key?: string;
  value?: string;
  mod_revision?: string;
  create_revision?: string;
}
interface RangeResponse {
  kvs?: KeyValue[];
}
interface TxnResponse {
  header?: { revision?: string };
  succeeded?: boolean;
}

/** A call failed before the request could have reached etcd (safe to retry anywhere). */
class NotSent extends Error {}

function b64(s: string | Uint8Array): string {
  return Buffer.from(s).toString('base64');
}

export class EtcdRecordStore implements RecordStore {
  readonly name: string;
  readonly #endpoints: readonly string[];
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #suspectUntil = new Map<string, number>();
  #preferred = 0;
  #closed = false;

  /** @throws RangeError for an empty endpoint list or a bad URL */
  constructor(options: EtcdStoreOptions) {
    if (options.endpoints.length === 0) throw new RangeError('endpoints: at least one etcd endpoint is required');
    this.#endpoints = options.endpoints.map((e) => {
      const u = new URL(e);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new RangeError(`endpoints: ${e} is not an http(s) URL`);
      return u.origin;
    });
    this.#prefix = options.prefix ?? DEFAULT_ETCD_PREFIX;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_ETCD_TIMEOUT_MS;
    this.name = `etcd:${this.#endpoints.join(',')}/${this.#prefix}`;
  }

  #key(account: string): string {
    return b64(`${this.#prefix}records/${account}`);
  }

  /** Endpoints to try, healthy ones first starting from the last that worked. */
  #order(): string[] {
    const now = Date.now();
    const n = this.#endpoints.length;
    const all = Array.from({ length: n }, (_, i) => this.#endpoints[(this.#preferred + i) % n]!);
    const healthy = all.filter((e) => (this.#suspectUntil.get(e) ?? 0) <= now);
    return [...healthy, ...all.filter((e) => !healthy.includes(e))];
  }

  #succeeded(endpoint: string): void {
    this.#suspectUntil.delete(endpoint);
    this.#preferred = this.#endpoints.indexOf(endpoint);
  }

  async #post<T>(endpoint: string, path: string, body: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${endpoint}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      if (cause?.code === 'ECONNREFUSED' || cause?.code === 'EHOSTUNREACH') throw new NotSent(`${endpoint}: connection refused`);
      throw new Error(`${endpoint}: ${(err as Error).name === 'TimeoutError' ? `no answer within ${this.#timeoutMs} ms` : (err as Error).message}`, { cause: err });
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new Error(`${endpoint}: ${(err as Error).message}`, { cause: err });
    }
    if (res.status !== 200) {
      let detail = text.slice(0, 200);
      try {
        detail = (JSON.parse(text) as { error?: string; message?: string }).message ?? detail;
      } catch {
        /* not JSON */
      }
      throw new Error(`${endpoint}: HTTP ${res.status} ${detail}`);
    }
    return JSON.parse(text) as T;
  }

  #check(): void {
    if (this.#closed) throw new StoreError('store is closed');
  }

  async #read(account: string): Promise<StoredRecord | null> {
    const errors: string[] = [];
    for (const endpoint of this.#order()) {
      try {
        const r = await this.#post<RangeResponse>(endpoint, '/v3/kv/range', { key: this.#key(account) });
        this.#succeeded(endpoint);
        const kv = r.kvs?.[0];
        if (!kv) return null;
        return { value: new Uint8Array(Buffer.from(kv.value ?? '', 'base64')), version: String(kv.mod_revision) };
      } catch (err) {
        this.#suspectUntil.set(endpoint, Date.now() + SUSPECT_MS);
        errors.push((err as Error).message);
      }
    }
    throw new StoreError(`etcd unavailable (no quorum or no endpoint answered): ${errors.join('; ')}`);
  }

  async get(account: string): Promise<StoredRecord | null> {
    this.#check();
    return this.#read(account);
  }

  /**
   * Runs a compare-and-swap txn with failover. `committed(current)` tells whether the
   * record as re-read after an ambiguous failure shows that our txn applied.
   */
  async #txn(account: string, compare: unknown, success: unknown, committed: (current: StoredRecord | null) => boolean): Promise<{ ok: boolean; revision: string }> {
    const errors: string[] = [];
    const body = { compare: [compare], success: [success] };
    for (const endpoint of this.#order()) {
      try {
        const r = await this.#post<TxnResponse>(endpoint, '/v3/kv/txn', body);
        this.#succeeded(endpoint);
        return { ok: r.succeeded === true, revision: String(r.header?.revision) };
      } catch (err) {
        this.#suspectUntil.set(endpoint, Date.now() + SUSPECT_MS);
        errors.push((err as Error).message);
        if (err instanceof NotSent) continue;
        // It may have committed: look before trying again elsewhere.
        let current: StoredRecord | null;
        try {
          current = await this.#read(account);
        } catch (readErr) {
          throw new StoreError(`etcd commit outcome unknown and store unavailable: ${errors.join('; ')}; ${(readErr as Error).message}`);
        }
        if (committed(current)) return { ok: true, revision: current?.version ?? '0' };
      }
    }
    throw new StoreError(`etcd unavailable (no quorum or no endpoint answered): ${errors.join('; ')}`);
  }

  async compareAndPut(account: string, value: Uint8Array, expected: RecordVersion | null): Promise<CasResult> {
    this.#check();
    const key = this.#key(account);
    if (expected !== null && !/^[1-9]\d*$/.test(expected)) return { ok: false };
    const compare = expected === null ? { key, target: 'CREATE', result: 'EQUAL', create_revision: '0' } : { key, target: 'MOD', result: 'EQUAL', mod_revision: expected };
    const r = await this.#txn(account, compare, { request_put: { key, value: b64(value) } }, (cur) => cur !== null && equalBytes(cur.value, value));
    // A txn's header revision is the revision its put created: the new mod_revision.
    return r.ok ? { ok: true, version: r.revision } : { ok: false };
  }

  async compareAndDelete(account: string, expected: RecordVersion): Promise<boolean> {
    this.#check();
    const key = this.#key(account);
    if (!/^[1-9]\d*$/.test(expected)) return false;
    const r = await this.#txn(account, { key, target: 'MOD', result: 'EQUAL', mod_revision: expected }, { request_delete_range: { key } }, (cur) => cur === null);
    return r.ok;
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}
