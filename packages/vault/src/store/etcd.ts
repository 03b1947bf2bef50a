/**
 * The fleet's record store on etcd (3.4+), through etcd's v3 JSON gateway over HTTP(S)
 * (`POST /v3/kv/range`, `/v3/kv/txn`): no client library, `node:http(s)` with a
 * keep-alive agent and a deadline on every call, several endpoints with failover.
 *
 * Access control (issue 8 §4). `https://` endpoints verify etcd's certificate against
 * `tls.ca` and present `tls.cert`/`tls.key` (etcd `--client-cert-auth`), and `auth`
 * logs in as an etcd RBAC user (`/v3/auth/authenticate`; the token goes in the
 * `Authorization` header, per endpoint since etcd's simple tokens are per member, and is
 * renewed when etcd says it is invalid or expired). Give that user a role limited to
 * the vault's prefix (docs/operations.md): then nobody without the client key and the
 * password can write, roll back or delete records.
 *
 * Erasure at rest (issue 8 §5). etcd keeps every old revision of a key until it is
 * compacted. After an erasure commits at revision R, the store compacts the keyspace
 * to R (`/v3/kv/compaction`, physical) right away, or — if it compacted less than
 * `compactIntervalMs` ago — as soon as that interval has passed, so the erased record's
 * older versions are unreadable within `compactIntervalMs` (default 5 s) of the erasure.
 * What compaction does not remove from disk (bbolt free pages until a defrag, the raft
 * WAL and snapshots) is in docs/operations.md.
 *
 * Sweep index: keys `<prefix>sweeps/<atMs, 15 digits>/<account>`, so due entries are
 * one range read in time order.
 *
 * Versions. A record's version is its key's `mod_revision`. etcd revisions are one
 * store-wide counter that only grows, so a key deleted and created again gets a larger
 * mod_revision than any it had before: a version never repeats (no ABA).
 * "Absent" is compared as `create_revision == 0`.
 *
 * Consistency. Reads are linearizable (etcd's default, not `serializable`): they go
 * through the leader's read index, so a member cut off from the quorum cannot answer
 * from stale state; it times out and we fail over, or report the store unavailable.
 * The one exception, `getMaybeStale`, is for the fleet leader, which checks what it
 * reads against its own log root (a stale record cannot match it) and then re-reads.
 * A txn resolves only after the quorum committed it, so the vault's "commit the guess,
 * then release KE2" holds across the fleet.
 *
 * Ambiguous writes. A txn that times out or loses its connection may still commit.
 * Before retrying on another endpoint we re-read the key: sealed records carry a fresh
 * random nonce, so byte-equality with what we wrote means it was our write. Otherwise
 * the retry is a compare-and-swap on the old version and cannot apply twice; if that
 * retry's compare fails, the key is read once more, since the first txn may have committed
 * after our look (then it is reported as ours, not as a conflict). The worst
 * case is a guess counted whose KE2 never left (the user loses one guess) — never a
 * guess answered but not counted.
 */
import { equalBytes } from '@coffer/protocol';
import * as http from 'node:http';
import * as https from 'node:https';
import { LogConflictError, StoreError, type BatchChange, type CasResult, type LogStore, type PutOptions, type RecordStore, type RecordVersion, type StoredRecord, type SweepEntry } from './store.js';

export interface EtcdTlsOptions {
  /** PEM: the CA(s) that sign etcd's server certificates (default: the system's). */
  readonly ca?: string | Uint8Array;
  /** PEM: this vault node's client certificate and key (etcd `--client-cert-auth`). */
  readonly cert?: string | Uint8Array;
  readonly key?: string | Uint8Array;
}

export interface EtcdStoreOptions {
  /** Client URLs, e.g. `https://127.0.0.1:2379`. Tried in order of health. */
  readonly endpoints: readonly string[];
  /** Key prefix for this fleet's records (default `coffer/vault/`). */
  readonly prefix?: string;
  /** Deadline of one HTTP call to one endpoint (default 2000 ms). */
  readonly timeoutMs?: number;
  /** For `https://` endpoints. */
  readonly tls?: EtcdTlsOptions;
  /** etcd RBAC user (etcd `auth enable`). */
  readonly auth?: { readonly user: string; readonly password: string };
  /** Longest time from an erasure to the compaction past it (default 5000 ms; 0: at once). */
  readonly compactIntervalMs?: number;
}

export const DEFAULT_ETCD_PREFIX = 'coffer/vault/';
export const DEFAULT_ETCD_TIMEOUT_MS = 2000;
export const DEFAULT_ETCD_COMPACT_INTERVAL_MS = 5000;
/** After a failure, an endpoint is tried last for this long. */
const SUSPECT_MS = 3000;
/** Width of the zero-padded time in sweep index keys (ms until the year 33658). */
const AT_DIGITS = 15;
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });
/** Width of the zero-padded index in log keys (u64). */
const INDEX_DIGITS = 20;
/**
 * Log entries kept behind the head: a fleet member that falls further behind (or lost its
 * anchor) resumes from the majority's challenge answers (spec §13.9), not from the log.
 */
const LOG_KEEP = 1024;
/** Log values read per range call (each holds up to ETCD_MAX_BATCH_CHANGES digests). */
const LOG_READ_LIMIT = 256;
/**
 * Record changes per logged batch: etcd refuses a txn of more than --max-txn-ops (default
 * 128) operations; a batch adds the entry, the head and maybe a prune.
 */
export const ETCD_MAX_BATCH_CHANGES = 120;

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
/**
 * A kept-alive connection broke under the request (etcd or a proxy closed it while
 * idle): it may have been sent, so it is ambiguous, but the endpoint is not suspect —
 * one more try on the same endpoint (after the ambiguity check) is in order.
 */
class StaleConnection extends Error {}
/** etcd answered with an error: the request was not applied. */
class Refused extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly etcdMessage: string,
  ) {
    super(message);
  }
}

function b64(s: string | Uint8Array): string {
  return Buffer.from(s).toString('base64');
}

/** etcd's messages for a token that is missing, expired or from an older auth state. */
const TOKEN_INVALID = /invalid auth token|auth token is not provided|user name is empty|revision of auth store is old/;

/** TLS errors that happen during the handshake, before any request byte is sent. */
const HANDSHAKE_ERRORS = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'EPROTO',
  'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
  'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
]);

/** The end of the key range of every key starting with `p` (etcd's prefix range_end). */
function prefixEnd(p: string): string {
  const b = Buffer.from(p);
  b[b.length - 1]! += 1;
  return b.toString('latin1');
}

export interface CommitBatchOptions {
  /** What the log key holds (default: the entry alone); the fleet stores entry ‖ change digests. */
  readonly logValue?: Uint8Array;
  /** Fleet: the txn also requires `group/leader` to have this create_revision (this leader's term). */
  readonly leaderTerm?: string;
}

/** One change seen by the group watch: `key` relative to the prefix (`log/…`, `group/…`); `value` null: deleted. */
export interface GroupEvent {
  readonly key: string;
  readonly value: Uint8Array | null;
}

/** A watch stream message → its events; null for anything but a plain event batch (created, canceled, compacted, error, not JSON). */
function parseWatchMessage(line: string, prefixLength: number): GroupEvent[] | null {
  let msg: { result?: { events?: Array<{ type?: string; kv?: KeyValue }>; created?: boolean; canceled?: boolean; compact_revision?: string } };
  try {
    msg = JSON.parse(line) as typeof msg;
  } catch {
    return null;
  }
  const r = msg.result;
  if (!r || r.created || r.canceled || !Array.isArray(r.events)) return null;
  return r.events.map((e) => ({
    key: Buffer.from(e.kv?.key ?? '', 'base64').subarray(prefixLength).toString('utf8'),
    value: e.type === 'DELETE' ? null : new Uint8Array(Buffer.from(e.kv?.value ?? '', 'base64')),
  }));
}

export class EtcdRecordStore implements RecordStore, LogStore {
  readonly maxBatchChanges = ETCD_MAX_BATCH_CHANGES;
  readonly name: string;
  readonly #endpoints: readonly string[];
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #suspectUntil = new Map<string, number>();
  readonly #httpAgent: http.Agent;
  readonly #httpsAgent: https.Agent | null;
  readonly #auth: { readonly user: string; readonly password: string } | null;
  /** Per endpoint: etcd's simple tokens are valid on the member that issued them only. */
  readonly #tokens = new Map<string, Promise<string>>();
  readonly #compactIntervalMs: number;
  #compactWanted = 0;
  #compactedAt = 0;
  #compactTimer: NodeJS.Timeout | null = null;
  #compacting: Promise<void> | null = null;
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
    if ((options.tls?.cert === undefined) !== (options.tls?.key === undefined)) throw new RangeError('tls: cert and key go together');
    this.#prefix = options.prefix ?? DEFAULT_ETCD_PREFIX;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_ETCD_TIMEOUT_MS;
    this.#compactIntervalMs = options.compactIntervalMs ?? DEFAULT_ETCD_COMPACT_INTERVAL_MS;
    this.#auth = options.auth ?? null;
    this.#httpAgent = new http.Agent({ keepAlive: true });
    const pem = (v: string | Uint8Array | undefined): string | Buffer | undefined => (v === undefined ? undefined : typeof v === 'string' ? v : Buffer.from(v));
    this.#httpsAgent = this.#endpoints.some((e) => e.startsWith('https:'))
      ? new https.Agent({
          keepAlive: true,
          ...(options.tls?.ca !== undefined ? { ca: pem(options.tls.ca) } : {}),
          ...(options.tls?.cert !== undefined ? { cert: pem(options.tls.cert), key: pem(options.tls.key) } : {}),
        })
      : null;
    this.name = `etcd:${this.#endpoints.join(',')}/${this.#prefix}`;
  }

  #key(account: string): string {
    return b64(`${this.#prefix}records/${account}`);
  }

  #sweepKey(e: SweepEntry): string {
    return `${this.#prefix}sweeps/${String(e.atMs).padStart(AT_DIGITS, '0')}/${e.account}`;
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

  /** One HTTP POST with a deadline. @throws NotSent, Refused (etcd's error answer) or Error (outcome unknown) */
  #request(endpoint: string, path: string, body: unknown, token: string | null): Promise<unknown> {
    const url = new URL(path, endpoint);
    const payload = Buffer.from(JSON.stringify(body));
    const secure = url.protocol === 'https:';
    const mod = secure ? https : http;
    return new Promise((resolve, reject) => {
      let sent = false;
      let reused = false;
      const req = mod.request(url, {
        method: 'POST',
        agent: secure ? this.#httpsAgent! : this.#httpAgent,
        headers: { 'content-type': 'application/json', 'content-length': payload.length, ...(token ? { authorization: token } : {}) },
      });
      const timer = setTimeout(() => req.destroy(Object.assign(new Error(`no answer within ${this.#timeoutMs} ms`), { code: 'ETIMEDOUT' })), this.#timeoutMs);
      req.once('socket', (socket) => {
        const mark = (): void => {
          sent = true;
        };
        // A reused keep-alive socket is connected already: what we write may arrive.
        if (!socket.connecting) {
          reused = true;
          mark();
        }
        else socket.once(secure ? 'secureConnect' : 'connect', mark);
      });
      req.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const code = err.code ?? '';
        const what = `${endpoint}: ${err.message}${code && !err.message.includes(code) ? ` (${code})` : ''}`;
        if (!sent || HANDSHAKE_ERRORS.has(code)) reject(new NotSent(what));
        else if (reused && (code === 'ECONNRESET' || code === 'EPIPE')) reject(new StaleConnection(what, { cause: err }));
        else reject(new Error(what, { cause: err }));
      });
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('error', (err) => {
          clearTimeout(timer);
          reject(new Error(`${endpoint}: ${err.message}`, { cause: err }));
        });
        res.once('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) {
            let detail = text.slice(0, 200);
            try {
              const j = JSON.parse(text) as { error?: string; message?: string };
              detail = j.message ?? j.error ?? detail;
            } catch {
              /* not JSON */
            }
            reject(new Refused(`${endpoint}: HTTP ${res.statusCode} ${detail}`, res.statusCode ?? 0, detail));
            return;
          }
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(new Error(`${endpoint}: bad JSON from etcd: ${(err as Error).message}`));
          }
        });
      });
      req.end(payload);
    });
  }

  /** This endpoint's token, logging in when there is none or it is `stale` (refused by etcd). */
  async #token(endpoint: string, stale: string | null): Promise<string | null> {
    if (!this.#auth) return null;
    for (;;) {
      const held = this.#tokens.get(endpoint);
      if (!held) break;
      const t = await held.catch(() => null);
      if (t !== null && t !== stale) return t;
      if (this.#tokens.get(endpoint) === held) {
        this.#tokens.delete(endpoint);
        break;
      }
    }
    const login = (this.#request(endpoint, '/v3/auth/authenticate', { name: this.#auth.user, password: this.#auth.password }, null) as Promise<{ token?: string }>).then((r) => {
      if (!r.token) throw new Refused(`${endpoint}: etcd auth returned no token (is auth enabled on this member?)`, 200, 'no token');
      return r.token;
    });
    this.#tokens.set(endpoint, login);
    return login;
  }

  /** A call with this endpoint's auth token; logs in again once if etcd says the token is invalid. */
  async #post<T>(endpoint: string, path: string, body: unknown): Promise<T> {
    const token = await this.#token(endpoint, null);
    try {
      return (await this.#request(endpoint, path, body, token)) as T;
    } catch (err) {
      if (!(err instanceof Refused) || !this.#auth || !TOKEN_INVALID.test(err.etcdMessage)) throw err;
      const renewed = await this.#token(endpoint, token);
      return (await this.#request(endpoint, path, body, renewed)) as T;
    }
  }

  #check(): void {
    if (this.#closed) throw new StoreError('store is closed');
  }

  /** An idempotent call (read, plain put or delete) on the first endpoint that answers. */
  async #any<T>(path: string, body: unknown): Promise<T> {
    const errors: string[] = [];
    const order = this.#order();
    for (let i = 0; i < order.length; i++) {
      const endpoint = order[i]!;
      try {
        const r = await this.#post<T>(endpoint, path, body);
        this.#succeeded(endpoint);
        return r;
      } catch (err) {
        errors.push((err as Error).message);
        if (err instanceof StaleConnection && order.indexOf(endpoint) === i) {
          order.splice(i + 1, 0, endpoint); // once more, on a fresh connection
          continue;
        }
        this.#suspectUntil.set(endpoint, Date.now() + SUSPECT_MS);
      }
    }
    throw new StoreError(`etcd unavailable (no quorum, no endpoint answered, or access refused): ${errors.join('; ')}`);
  }

  async #read(account: string, serializable = false): Promise<StoredRecord | null> {
    const r = await this.#any<RangeResponse>('/v3/kv/range', serializable ? { key: this.#key(account), serializable: true } : { key: this.#key(account) });
    const kv = r.kvs?.[0];
    if (!kv) return null;
    return { value: new Uint8Array(Buffer.from(kv.value ?? '', 'base64')), version: String(kv.mod_revision) };
  }

  async get(account: string): Promise<StoredRecord | null> {
    this.#check();
    return this.#read(account);
  }

  /**
   * A serializable read: the member answers from its own state, without the leader's read
   * index (one raft round trip fewer), so it may be behind. The fleet leader checks it
   * against its log root and re-reads with `get` when it does not match (VaultService).
   */
  async getMaybeStale(account: string): Promise<StoredRecord | null> {
    this.#check();
    return this.#read(account, true);
  }

  /**
   * Runs a compare-and-swap txn with failover. `committed(current)` tells whether the
   * record as re-read after an ambiguous failure shows that our txn applied.
   */
  async #txn(account: string, compare: unknown, success: unknown, committed: (current: StoredRecord | null) => boolean): Promise<{ ok: boolean; revision: string }> {
    const errors: string[] = [];
    const body = { compare: [compare], success: [success] };
    const order = this.#order();
    let ambiguous = false;
    for (let i = 0; i < order.length; i++) {
      const endpoint = order[i]!;
      try {
        const r = await this.#post<TxnResponse>(endpoint, '/v3/kv/txn', body);
        this.#succeeded(endpoint);
        if (r.succeeded !== true && ambiguous) {
          // The retry's compare failed: perhaps because the earlier, ambiguous txn did
          // commit after our re-read. Look once more: a write of ours is reported as ours.
          const current = await this.#read(account);
          if (committed(current)) return { ok: true, revision: current?.version ?? '0' };
        }
        return { ok: r.succeeded === true, revision: String(r.header?.revision) };
      } catch (err) {
        errors.push((err as Error).message);
        // A broken kept-alive connection: once more on this endpoint (after the check below).
        if (err instanceof StaleConnection && order.indexOf(endpoint) === i) order.splice(i + 1, 0, endpoint);
        else this.#suspectUntil.set(endpoint, Date.now() + SUSPECT_MS);
        // Not sent, or refused by etcd (no permission, bad token): it did not apply.
        if (err instanceof NotSent || (err instanceof Refused && err.status >= 400 && err.status < 500)) continue;
        // It may have committed: look before trying again elsewhere.
        ambiguous = true;
        let current: StoredRecord | null;
        try {
          current = await this.#read(account);
        } catch (readErr) {
          throw new StoreError(`etcd commit outcome unknown and store unavailable: ${errors.join('; ')}; ${(readErr as Error).message}`);
        }
        if (committed(current)) return { ok: true, revision: current?.version ?? '0' };
      }
    }
    throw new StoreError(`etcd unavailable (no quorum, no endpoint answered, or access refused): ${errors.join('; ')}`);
  }

  async compareAndPut(account: string, value: Uint8Array, expected: RecordVersion | null, options: PutOptions = {}): Promise<CasResult> {
    this.#check();
    const key = this.#key(account);
    if (expected !== null && !/^[1-9]\d*$/.test(expected)) return { ok: false };
    const compare = expected === null ? { key, target: 'CREATE', result: 'EQUAL', create_revision: '0' } : { key, target: 'MOD', result: 'EQUAL', mod_revision: expected };
    const r = await this.#txn(account, compare, { request_put: { key, value: b64(value) } }, (cur) => cur !== null && equalBytes(cur.value, value));
    if (r.ok && options.erasure) this.#erased(r.revision);
    // A txn's header revision is the revision its put created: the new mod_revision.
    return r.ok ? { ok: true, version: r.revision } : { ok: false };
  }

  async compareAndDelete(account: string, expected: RecordVersion): Promise<boolean> {
    this.#check();
    const key = this.#key(account);
    if (!/^[1-9]\d*$/.test(expected)) return false;
    const r = await this.#txn(account, { key, target: 'MOD', result: 'EQUAL', mod_revision: expected }, { request_delete_range: { key } }, (cur) => cur === null);
    if (r.ok) this.#erased(r.revision);
    return r.ok;
  }

  async scheduleSweep(account: string, atMs: number): Promise<void> {
    this.#check();
    if (!Number.isSafeInteger(atMs) || atMs < 0) throw new RangeError(`atMs: not a non-negative integer: ${atMs}`);
    await this.#any('/v3/kv/put', { key: b64(this.#sweepKey({ account, atMs })), value: '' });
  }

  async dueSweeps(nowMs: number, limit: number): Promise<SweepEntry[]> {
    this.#check();
    const base = `${this.#prefix}sweeps/`;
    const end = `${base}${String(Math.max(0, Math.floor(nowMs) + 1)).padStart(AT_DIGITS, '0')}`;
    const r = await this.#any<RangeResponse>('/v3/kv/range', { key: b64(base), range_end: b64(end), limit: String(limit), keys_only: true });
    const out: SweepEntry[] = [];
    const strays: string[] = [];
    for (const kv of r.kvs ?? []) {
      const raw = Buffer.from(kv.key ?? '', 'base64');
      let rest: string;
      try {
        rest = STRICT_UTF8.decode(raw).slice(base.length);
      } catch {
        strays.push(kv.key ?? '');
        continue;
      }
      const slash = rest.indexOf('/');
      const atMs = Number(rest.slice(0, slash));
      if (slash !== AT_DIGITS || !/^\d+$/.test(rest.slice(0, slash)) || !Number.isSafeInteger(atMs)) {
        strays.push(kv.key ?? '');
        continue;
      }
      out.push({ account: rest.slice(slash + 1), atMs });
    }
    // A key in the sweep range that no vault wrote (not UTF-8, no 15-digit time) would
    // hold its place at the head of every range and, `limit` of them, stall the sweeper
    // for good: deleted here (it is in our prefix, and the sweep index is ours).
    for (const key of strays) await this.#any('/v3/kv/deleterange', { key });
    return out;
  }

  async clearSweep(entry: SweepEntry): Promise<void> {
    this.#check();
    await this.#any('/v3/kv/deleterange', { key: b64(this.#sweepKey(entry)) });
  }

  /** An erasure committed at `revision`: compact past it within compactIntervalMs. */
  #erased(revision: string): void {
    const rev = Number(revision);
    if (!Number.isSafeInteger(rev) || rev <= 0) return;
    this.#compactWanted = Math.max(this.#compactWanted, rev);
    this.#scheduleCompaction();
  }

  #scheduleCompaction(): void {
    if (this.#compactTimer || this.#compacting || this.#closed || this.#compactWanted === 0) return;
    const delay = Math.max(0, this.#compactedAt + this.#compactIntervalMs - Date.now());
    this.#compactTimer = setTimeout(() => {
      this.#compactTimer = null;
      this.#compacting = this.#compact().finally(() => {
        this.#compacting = null;
        this.#scheduleCompaction();
      });
    }, delay);
    this.#compactTimer.unref();
  }

  async #compact(): Promise<void> {
    const rev = this.#compactWanted;
    this.#compactedAt = Date.now();
    try {
      // physical: etcd answers once the compaction has been applied to its backend.
      await this.#any('/v3/kv/compaction', { revision: String(rev), physical: true });
      if (this.#compactWanted === rev) this.#compactWanted = 0;
    } catch (err) {
      // Another node compacted further already: done. Anything else: tried again.
      if (/required revision has been compacted/.test((err as Error).message) && this.#compactWanted === rev) this.#compactWanted = 0;
      this.onCompactionError?.(err as Error);
    }
  }

  /** Called when a compaction fails (it is retried after compactIntervalMs). */
  onCompactionError: ((err: Error) => void) | null = null;

  /** TEST/OPS: resolves once no compaction is owed or running (or the store closed). */
  async compacted(): Promise<void> {
    while (!this.#closed && (this.#compactWanted !== 0 || this.#compacting)) {
      if (this.#compacting) await this.#compacting;
      else await new Promise((r) => setTimeout(r, 20));
    }
  }

  // --- The rollback-protection log (spec §13): `<prefix>log/<index, 20 digits>` and
  // `<prefix>loghead` (the newest index, decimal), written in the records' txn.

  #logKey(index: number): string {
    return `${this.#prefix}log/${String(index).padStart(INDEX_DIGITS, '0')}`;
  }

  async readLog(fromIndex: number): Promise<Uint8Array[]> {
    this.#check();
    const out: Uint8Array[] = [];
    for (let from = fromIndex; ; ) {
      const page = await this.readLogValues(from, LOG_READ_LIMIT);
      // The entry only (a fleet's value also carries its change digests, spec §13.7).
      for (const v of page) out.push(v.subarray(0, Math.min(v.length, 120)));
      if (page.length < LOG_READ_LIMIT) return out;
      from = Number(new DataView(page.at(-1)!.buffer, page.at(-1)!.byteOffset + 16, 8).getBigUint64(0)) + 1;
    }
  }

  /** The stored log values (entry ‖ change digests) with index ≥ `fromIndex`, in index order, at most `limit`. */
  async readLogValues(fromIndex: number, limit: number): Promise<Uint8Array[]> {
    this.#check();
    const r = await this.#any<RangeResponse>('/v3/kv/range', { key: b64(this.#logKey(fromIndex)), range_end: b64(`${this.#prefix}log0`), limit: String(limit) });
    return (r.kvs ?? []).map((kv) => new Uint8Array(Buffer.from(kv.value ?? '', 'base64')));
  }

  /** The log's head index as the store says (0: none). */
  async logHead(): Promise<number> {
    this.#check();
    const kv = (await this.#any<RangeResponse>('/v3/kv/range', { key: b64(`${this.#prefix}loghead`) })).kvs?.[0];
    const n = kv ? Number(Buffer.from(kv.value ?? '', 'base64').toString('utf8')) : 0;
    return Number.isSafeInteger(n) && n >= 0 ? n : 0;
  }

  // --- Group coordination (spec §13.6–§13.9): `<prefix>group/…`. Everything here is
  // untrusted input to the core (acks and answers are MACed); the leader key only
  // decides who appends (liveness), the log head and anchors decide safety.

  #groupKey(sub: string): string {
    return `${this.#prefix}group/${sub}`;
  }

  /** Keys under `group/<sub>` with their values (key relative to `group/`). */
  async groupRange(sub: string): Promise<Array<{ key: string; value: Uint8Array; createRevision: string; lease: string }>> {
    this.#check();
    const base = this.#groupKey(sub);
    const r = await this.#any<RangeResponse>('/v3/kv/range', { key: b64(base), range_end: b64(prefixEnd(base)) });
    const start = this.#groupKey('').length;
    return (r.kvs ?? []).map((kv) => ({
      key: Buffer.from(kv.key ?? '', 'base64').toString('utf8').slice(start),
      value: new Uint8Array(Buffer.from(kv.value ?? '', 'base64')),
      createRevision: String(kv.create_revision ?? '0'),
      lease: String((kv as { lease?: string }).lease ?? '0'),
    }));
  }

  async groupPut(sub: string, value: Uint8Array): Promise<void> {
    this.#check();
    await this.#any('/v3/kv/put', { key: b64(this.#groupKey(sub)), value: b64(value) });
  }

  async groupDelete(sub: string): Promise<void> {
    this.#check();
    const k = this.#groupKey(sub);
    await this.#any('/v3/kv/deleterange', { key: b64(k), range_end: b64(prefixEnd(k)) });
  }

  /**
   * Tries to become the group's leader: a lease of `ttlSeconds`, and `group/leader` =
   * nodeId created under it if absent. Returns the leader key as it then is (ours or not).
   */
  async campaign(nodeId: string, ttlSeconds: number): Promise<{ leader: string; term: string; lease: string } | null> {
    this.#check();
    const key = b64(this.#groupKey('leader'));
    const grant = await this.#any<{ ID?: string }>('/v3/lease/grant', { TTL: String(ttlSeconds) });
    if (!grant.ID) throw new StoreError('etcd: lease grant returned no ID');
    const r = await this.#any<TxnResponse & { responses?: Array<{ response_range?: RangeResponse }> }>('/v3/kv/txn', {
      compare: [{ key, target: 'CREATE', result: 'EQUAL', create_revision: '0' }],
      success: [{ request_put: { key, value: b64(nodeId), lease: grant.ID } }, { request_range: { key } }],
      failure: [{ request_range: { key } }],
    });
    if (r.succeeded !== true) await this.revoke(grant.ID).catch(() => undefined);
    const kv = r.responses?.at(-1)?.response_range?.kvs?.[0];
    if (!kv) return null;
    return { leader: Buffer.from(kv.value ?? '', 'base64').toString('utf8'), term: String(kv.create_revision), lease: String((kv as { lease?: string }).lease ?? '0') };
  }

  /** Renews a lease once; false when etcd says it is gone (TTL ≤ 0). */
  async keepAlive(lease: string): Promise<boolean> {
    this.#check();
    const r = await this.#any<{ result?: { TTL?: string } }>('/v3/lease/keepalive', { ID: lease });
    return Number(r.result?.TTL ?? 0) > 0;
  }

  async revoke(lease: string): Promise<void> {
    await this.#any('/v3/lease/revoke', { ID: lease });
  }

  /**
   * Calls `onChange` with what changed under `log/` and `group/` (etcd watch over the JSON
   * gateway, re-established on failure), in revision order per prefix. `null` means
   * "events may have been missed" (the watch was (re)created, or its stream was not
   * understood): the caller must read what it needs. The payload is as untrusted as a
   * range read (it is etcd's word either way): the fleet verifies what counts (spec §13.7).
   */
  watchGroup(onChange: (events: readonly GroupEvent[] | null) => void): { close(): void } {
    let closed = false;
    const live = new Set<http.ClientRequest>();
    const ranges = [`${this.#prefix}log/`, this.#groupKey('')];
    const prefixLength = Buffer.byteLength(this.#prefix);
    const open = (range: string, attempt: number): void => {
      if (closed || this.#closed) return;
      const endpoint = this.#order()[attempt % this.#endpoints.length]!;
      const url = new URL('/v3/watch', endpoint);
      const secure = url.protocol === 'https:';
      const retry = (): void => {
        if (!closed) setTimeout(() => open(range, attempt + 1), 200).unref();
      };
      void this.#token(endpoint, null)
        .catch(() => null)
        .then((token) => {
          if (closed) return;
          const body = Buffer.from(JSON.stringify({ create_request: { key: b64(range), range_end: b64(prefixEnd(range)) } }));
          const req = (secure ? https : http).request(url, {
            method: 'POST',
            agent: secure ? this.#httpsAgent! : new http.Agent({ keepAlive: false }),
            headers: { 'content-type': 'application/json', 'content-length': body.length, ...(token ? { authorization: token } : {}) },
          });
          live.add(req);
          req.once('close', () => live.delete(req));
          let retried = false;
          const again = (): void => {
            onChange(null);
            if (!retried) {
              retried = true;
              retry();
            }
          };
          req.once('error', again);
          req.once('response', (res) => {
            // The gateway streams one JSON message per line: {"result":{"created":true,…}}
            // once the watch is in place, then {"result":{"events":[…]}} per revision.
            let buffered = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              buffered += chunk;
              let nl: number;
              while ((nl = buffered.indexOf('\n')) >= 0) {
                const line = buffered.slice(0, nl).trim();
                buffered = buffered.slice(nl + 1);
                if (line.length > 0) onChange(res.statusCode === 200 ? parseWatchMessage(line, prefixLength) : null);
              }
            });
            res.once('end', again);
            res.once('error', again);
          });
          req.end(body);
          onChange(null);
        });
    };
    for (const r of ranges) open(r, 0);
    return {
      close() {
        closed = true;
        for (const req of live) req.destroy();
      },
    };
  }

  async listRecords(): Promise<Array<readonly [string, Uint8Array]>> {
    this.#check();
    const base = `${this.#prefix}records/`;
    const out: Array<readonly [string, Uint8Array]> = [];
    let from = base;
    for (;;) {
      const r = await this.#any<RangeResponse & { more?: boolean }>('/v3/kv/range', { key: b64(from), range_end: b64(`${this.#prefix}records0`), limit: '1000' });
      const kvs = r.kvs ?? [];
      for (const kv of kvs) out.push([Buffer.from(kv.key ?? '', 'base64').toString('utf8').slice(base.length), new Uint8Array(Buffer.from(kv.value ?? '', 'base64'))]);
      if (!r.more || kvs.length === 0) return out;
      from = `${Buffer.from(kvs.at(-1)!.key ?? '', 'base64').toString('utf8')}\0`;
    }
  }

  /**
   * One txn: if `<prefix>loghead` is `index - 1` (absent for index 1), put/delete the
   * records, put the entry and the head (and prune old entries). An ambiguous failure is
   * resolved by reading the entry back (entries carry a MAC over a fresh chain: equal
   * bytes mean our txn applied).
   */
  async commitBatch(changes: readonly BatchChange[], index: number, entry: Uint8Array, options: CommitBatchOptions = {}): Promise<Map<string, RecordVersion>> {
    this.#check();
    if (changes.length > ETCD_MAX_BATCH_CHANGES) throw new RangeError(`commitBatch: at most ${ETCD_MAX_BATCH_CHANGES} changes`);
    const head = b64(`${this.#prefix}loghead`);
    const compare: unknown[] = [index === 1 ? { key: head, target: 'CREATE', result: 'EQUAL', create_revision: '0' } : { key: head, target: 'VALUE', result: 'EQUAL', value: b64(String(index - 1)) }];
    // The previous entry must still be there: a deleted head is a truncated log (spec §13.7).
    if (index > 1) compare.push({ key: b64(this.#logKey(index - 1)), target: 'CREATE', result: 'GREATER', create_revision: '0' });
    // Fleet (spec §13.6): only while this node's leader key (its term) still exists.
    if (options.leaderTerm !== undefined) compare.push({ key: b64(this.#groupKey('leader')), target: 'CREATE', result: 'EQUAL', create_revision: options.leaderTerm });
    const success: unknown[] = changes.map((c) => (c.value === null ? { request_delete_range: { key: this.#key(c.account) } } : { request_put: { key: this.#key(c.account), value: b64(c.value) } }));
    const stored = options.logValue ?? entry;
    entry = stored;
    success.push({ request_put: { key: b64(this.#logKey(index)), value: b64(stored) } }, { request_put: { key: head, value: b64(String(index)) } });
    if (index > LOG_KEEP && index % 64 === 0) success.push({ request_delete_range: { key: b64(this.#logKey(0)), range_end: b64(this.#logKey(index - LOG_KEEP)) } });
    const body = { compare, success };
    const errors: string[] = [];
    const order = this.#order();
    let revision: string | null = null;
    for (let i = 0; i < order.length && revision === null; i++) {
      const endpoint = order[i]!;
      try {
        const r = await this.#post<TxnResponse>(endpoint, '/v3/kv/txn', body);
        this.#succeeded(endpoint);
        if (r.succeeded !== true) throw new LogConflictError(`etcd: the log's head is not ${index - 1}${options.leaderTerm !== undefined ? ' or this node is no longer the leader' : ''}: another writer, or the store changed under this vault`);
        revision = String(r.header?.revision);
      } catch (err) {
        if (err instanceof LogConflictError) throw err;
        errors.push((err as Error).message);
        if (err instanceof StaleConnection && order.indexOf(endpoint) === i) order.splice(i + 1, 0, endpoint);
        else this.#suspectUntil.set(endpoint, Date.now() + SUSPECT_MS);
        if (err instanceof NotSent || (err instanceof Refused && err.status >= 400 && err.status < 500)) continue;
        let kv: KeyValue | undefined;
        try {
          kv = (await this.#any<RangeResponse>('/v3/kv/range', { key: b64(this.#logKey(index)) })).kvs?.[0];
        } catch (readErr) {
          throw new StoreError(`etcd commit outcome unknown and store unavailable: ${errors.join('; ')}; ${(readErr as Error).message}`);
        }
        if (kv && equalBytes(new Uint8Array(Buffer.from(kv.value ?? '', 'base64')), entry)) revision = String(kv.mod_revision);
      }
    }
    if (revision === null) throw new StoreError(`etcd unavailable (no quorum, no endpoint answered, or access refused): ${errors.join('; ')}`);
    if (changes.some((c) => c.erasure || c.value === null)) this.#erased(revision);
    const versions = new Map<string, RecordVersion>();
    for (const c of changes) if (c.value !== null) versions.set(c.account, revision);
    return versions;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#compactTimer) {
      clearTimeout(this.#compactTimer);
      this.#compactTimer = null;
      // An erasure's compaction is owed: do it now rather than leave the history.
      if (this.#compactWanted !== 0) this.#compacting = this.#compact();
    }
    await this.#compacting;
    this.#httpAgent.destroy();
    this.#httpsAgent?.destroy();
  }
}
