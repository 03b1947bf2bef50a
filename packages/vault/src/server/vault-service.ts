/**
 * Glue between the pure core and the store: open the request, then decide and
 * compare-and-swap until the write commits, and only then release the answer
 * (spec §5.5: "the guess is durable before KE2 leaves").
 *
 * The sweeper (issue 8 §3): a record whose last guess is spent must lose its key
 * material when its open login ends, even if nobody calls again. A decision that
 * commits such a record carries `eraseAt`; the sweep index entry for it is written
 * *before* the record (so a record can never be exhausted without an entry; an entry
 * whose record write then lost a race is harmless: its sweep finds nothing to erase).
 * Failing to write the entry fails the request (503 store-unavailable, logged with the
 * detail) before anything is committed or answered. Every `sweepIntervalMs` the sweeper
 * takes the due entries and, under the account's queue like a request, reads the
 * record, asks `core.sweep` for the erasure, compare-and-swaps it (re-reading on a
 * conflict) and clears the entry.
 */
import { ACCOUNT_ID_PATTERN, equalBytes } from '@coffer/protocol';
import { RecordIntegrityError, type AccountRecord } from '../core/record.js';
import { PlatformError } from '../core/platform.js';
import type { Decision, OpenedVaultRequest, VaultCore } from '../core/vault-core.js';
import { StoreError, type RecordStore, type StoredRecord } from '../store/store.js';
import { AccountQueue } from './account-queue.js';
import type { ErrorCode } from './errors.js';
import type { VaultMetrics } from './metrics.js';
import type { SweepEntry } from '../store/store.js';
import { AnchorMissingError, StoreRolledBackError } from '../core/rollback.js';
import type { Committer } from './log-commit.js';
import { NotLeaderError } from './fleet-group.js';

/** Attempts before giving up on an account under heavy cross-node contention. */
const MAX_CAS_ATTEMPTS = 32;
/** Due entries taken per sweeper pass. */
const SWEEP_BATCH = 64;
/**
 * An entry whose record has nothing to erase is kept this long past its time (in case
 * this node's clock is behind the one that wrote it), then cleared.
 */
const SWEEP_GRACE_MS = 10_000;
/** After a failed sweep (store or HSM trouble), the account is left alone this long. */
const SWEEP_BACKOFF_MS = 10_000;
/** Records awaiting their login-finish kept decoded (bounded; oldest dropped first). */
const MAX_PENDING_LOGINS = 4096;

export type ServiceResult =
  | { readonly kind: 'answer'; readonly decision: Decision }
  | { readonly kind: 'error'; readonly code: ErrorCode; readonly op: string; readonly detail?: string; readonly leader?: string };

export interface VaultServiceOptions {
  readonly core: VaultCore;
  readonly store: RecordStore;
  readonly metrics: VaultMetrics;
  /**
   * TEST ONLY: SIGKILL this process right after a guess-counting write commits and
   * before the answer leaves, to prove the count survives a crash.
   */
  readonly insecureCrashAfterCommitForTesting?: boolean;
  /** How often the sweeper runs (default 1000 ms); it starts with `startSweeper()`. */
  readonly sweepIntervalMs?: number;
  /** Where the sweeper reports (pino-like); default silent. */
  readonly log?: ServiceLog;
  /** The clock the sweep index is read with (default Date.now; the core's platform clock in production is the same). */
  readonly now?: () => number;
  /**
   * Rollback protection (spec §13): every record read is checked against the captured
   * log root, every write goes through the group commit with a log entry and is
   * committed (captured; in a fleet by a majority) before the answer leaves. Without it
   * (a test-only switch) the store is trusted not to roll back, and writes are
   * compare-and-swaps.
   */
  readonly committer?: Committer;
}

export interface ServiceLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export class VaultService {
  readonly #queue = new AccountQueue();
  /**
   * The record each login-start committed, decoded, until its login-finish reads it
   * back: when the store returns the very bytes (and version) committed here, they are
   * handed to `decide` as `known` and the platform skips the unseal (spec §7: the
   * bytes are exactly what this process sealed, so authenticity is unchanged). Only
   * records with a login in progress are kept; any other write for the account drops
   * its entry.
   */
  readonly #pendingLogins = new Map<string, { version: string; bytes: Uint8Array; record: AccountRecord }>();
  #sweepTimer: NodeJS.Timeout | null = null;
  #sweeping: Promise<unknown> | null = null;
  #closed = false;
  readonly #sweepBackoff = new Map<string, number>();
  constructor(private readonly o: VaultServiceOptions) {}

  /** Starts the sweeper loop (every `sweepIntervalMs`); `close()` stops it. */
  startSweeper(): void {
    if (this.#sweepTimer || this.#closed) return;
    const interval = this.o.sweepIntervalMs ?? 1000;
    const next = (): void => {
      if (this.#closed) return;
      this.#sweepTimer = setTimeout(() => {
        this.#sweeping = this.sweepOnce().finally(() => {
          this.#sweeping = null;
          next();
        });
      }, interval);
      this.#sweepTimer.unref();
    };
    next();
  }

  /** Stops the sweeper and waits for a pass in progress. The store stays open. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sweepTimer) clearTimeout(this.#sweepTimer);
    this.#sweepTimer = null;
    await this.#sweeping;
  }

  /** One sweeper pass over the due entries; returns how many records it erased. */
  async sweepOnce(): Promise<number> {
    if (this.o.committer?.refuseEarly?.()) return 0; // a fleet member that does not lead: the leader sweeps
    const now = (this.o.now ?? Date.now)();
    let due: SweepEntry[];
    try {
      due = await this.o.store.dueSweeps(now, SWEEP_BATCH);
    } catch (err) {
      this.o.log?.warn({ err: (err as Error).message }, 'sweeper: cannot read the sweep index; retrying');
      return 0;
    }
    for (const [account, until] of this.#sweepBackoff) if (until <= now) this.#sweepBackoff.delete(account);
    // The sweep index is written by this vault, but it sits in the operator's store: an
    // entry naming something no request could name (the fleet's reserved member record
    // `\x00members`, a control character, an overlong name) was not written by a vault.
    // It is dropped unread, so the sweeper reads only what a request could have reached.
    const valid: SweepEntry[] = [];
    for (const e of due) {
      if (typeof e.account === 'string' && ACCOUNT_ID_PATTERN.test(e.account)) {
        valid.push(e);
        continue;
      }
      this.o.metrics.sweeps.inc({ result: 'invalid' });
      this.o.log?.warn({ account: JSON.stringify(String(e.account).slice(0, 64)) }, 'sweeper: a sweep index entry names no valid account (not written by a vault); dropped unread');
      try {
        await this.o.store.clearSweep(e);
      } catch (err) {
        this.o.log?.warn({ err: (err as Error).message }, 'sweeper: cannot drop an invalid sweep index entry; retrying');
      }
    }
    const results = await Promise.all(valid.filter((e) => !this.#sweepBackoff.has(e.account)).map((e) => this.#queue.run(e.account, () => this.#sweepEntry(e, now))));
    return results.filter(Boolean).length;
  }

  async #sweepEntry(entry: SweepEntry, now: number): Promise<boolean> {
    const { account } = entry;
    try {
      for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
        const stored = await this.o.store.get(account);
        await this.o.committer?.check(account, stored?.value ?? null);
        const write = stored ? await this.o.core.sweep(account, stored.value) : null;
        if (!stored || !write) {
          // Nothing (left) to erase: a right password reset it, a request erased it, or
          // it was deleted. Kept a little past its time in case our clock is behind.
          if (!stored || now - entry.atMs >= SWEEP_GRACE_MS) {
            await this.o.store.clearSweep(entry);
            this.o.metrics.sweeps.inc({ result: 'nothing' });
          }
          return false;
        }
        this.#pendingLogins.delete(account);
        if (this.o.committer) await this.o.committer.commit([{ account, value: write.kind === 'put' ? write.value : null, erasure: true }], { prior: stored.value });
        const ok = this.o.committer ? true : write.kind === 'put' ? (await this.o.store.compareAndPut(account, write.value, stored.version, { erasure: true })).ok : await this.o.store.compareAndDelete(account, stored.version);
        if (ok) {
          this.o.metrics.recordsErased.inc();
          this.o.metrics.sweeps.inc({ result: 'erased' });
          this.o.log?.info({ account: account.slice(0, 128), dueMs: entry.atMs, lateMs: now - entry.atMs }, 'sweeper: erased a record whose guesses were spent');
          await this.o.store.clearSweep(entry);
          return true;
        }
        this.o.metrics.storeConflicts.inc();
      }
      throw new StoreError(`sweeper: ${MAX_CAS_ATTEMPTS} compare-and-swap conflicts`);
    } catch (err) {
      this.o.metrics.sweeps.inc({ result: 'failed' });
      this.#sweepBackoff.set(account, now + SWEEP_BACKOFF_MS);
      const detail = err instanceof RecordIntegrityError ? 'the stored record failed authentication; left untouched' : err instanceof StoreRolledBackError ? `store rolled back: ${err.message}` : (err as Error).message;
      this.o.log?.[err instanceof RecordIntegrityError ? 'error' : 'warn']({ account: account.slice(0, 128), err: detail }, 'sweeper: could not erase; retrying later');
      return false;
    }
  }

  async handle(account: string, bytes: Uint8Array): Promise<ServiceResult> {
    const early = this.o.committer?.refuseEarly?.();
    if (early) return this.#failure(early, 'unknown');
    let opened;
    try {
      opened = await this.o.core.open(account, bytes);
    } catch (err) {
      return this.#failure(err, 'unknown');
    }
    if (opened.kind === 'refused') return { kind: 'error', code: opened.code, op: 'unknown', detail: opened.message };
    const req = opened.request;
    if (this.o.committer) {
      const committer = this.o.committer;
      return this.#queue.run(account, () => this.#handleLogged(committer, account, req));
    }
    return this.#queue.run(account, async () => {
      try {
        for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
          const stored = await this.o.store.get(account);
          const held = this.#pendingLogins.get(account);
          const known = held && stored && held.version === stored.version && equalBytes(held.bytes, stored.value) ? held.record : undefined;
          const decision = await this.o.core.decide(req, stored?.value ?? null, known);
          if (!decision.write) return { kind: 'answer', decision };
          let committed: boolean;
          this.#pendingLogins.delete(account);
          // The sweep index entry first (see the file comment): a failure here answers
          // 503 store-unavailable with nothing committed.
          const unscheduled = await this.#scheduleSweep(account, decision.eraseAt, req.op);
          if (unscheduled) return unscheduled;
          if (decision.write.kind === 'put') {
            const put = await this.o.store.compareAndPut(account, decision.write.value, stored?.version ?? null, { erasure: decision.recordErased });
            committed = put.ok;
            const rec = decision.write.record;
            if (put.ok && rec.state === 'active' && rec.pendingLogin) this.#hold(account, { version: put.version, bytes: decision.write.value, record: rec });
          } else committed = stored ? await this.o.store.compareAndDelete(account, stored.version) : true;
          if (committed) {
            if (decision.guessCounted) {
              this.o.metrics.guessesCounted.inc();
              if (this.o.insecureCrashAfterCommitForTesting) process.kill(process.pid, 'SIGKILL');
            }
            if (decision.recordErased) this.o.metrics.recordsErased.inc();
            return { kind: 'answer', decision };
          }
          this.o.metrics.storeConflicts.inc();
        }
        return { kind: 'error', code: 'store-contention', op: req.op };
      } catch (err) {
        return this.#failure(err, req.op);
      }
    });
  }

  /**
   * The record, checked against the log root. A store with a cheaper, possibly stale read
   * (etcd `serializable`: no quorum round) is read that way first; a stale record cannot
   * give the root (sealed records carry fresh nonces), so one that does is the current one.
   * Otherwise the record is read again linearizably and checked, with the rollback metric
   * and ALARM on that read alone.
   */
  async #readChecked(committer: Committer, account: string): Promise<StoredRecord | null> {
    if (this.o.store.getMaybeStale) {
      const quick = await this.o.store.getMaybeStale(account);
      if (await committer.matches(account, quick?.value ?? null)) return quick;
    }
    const stored = await this.o.store.get(account);
    try {
      await committer.check(account, stored?.value ?? null);
    } catch (err) {
      // A forged or corrupted record is `record-integrity` (as without the log); a genuine
      // one that is not the current version is a rollback.
      if (err instanceof StoreRolledBackError && err.account !== null && stored && !(await this.o.core.authentic(account, stored.value))) throw new RecordIntegrityError('the stored record failed authentication');
      throw err;
    }
    return stored;
  }

  /** The rollback-protected path: check, decide, commit with a log entry, capture, answer. */
  async #handleLogged(committer: Committer, account: string, req: OpenedVaultRequest): Promise<ServiceResult> {
    const release = committer.expect?.();
    try {
      // A login's finish (KE3) usually finds the record its start (KE2) committed, held
      // here. If the captured root says those bytes are the account's record, they are
      // the current one (what the store holds can only be that, or be rolled back):
      // decide on them without reading the store. Anything else is read and checked.
      // Every decision is still made on a record the root vouches for (spec §13.4).
      const held = this.#pendingLogins.get(account);
      const stored = held && (await committer.matches(account, held.bytes)) ? { value: held.bytes, version: held.version } : await this.#readChecked(committer, account);
      // `stored` taken from `held` is the very same array: no byte compare (3 KB, ~4 µs).
      const known = held && stored && held.version === stored.version && (stored.value === held.bytes || equalBytes(held.bytes, stored.value)) ? held.record : undefined;
      const decision = await this.o.core.decide(req, stored?.value ?? null, known);
      if (!decision.write) return { kind: 'answer', decision };
      this.#pendingLogins.delete(account);
      const unscheduled = await this.#scheduleSweep(account, decision.eraseAt, req.op);
      if (unscheduled) return unscheduled;
      const w = decision.write;
      if (w.kind === 'delete' && !stored) return this.#committed(decision);
      const committing = committer.commit([{ account, value: w.kind === 'put' ? w.value : null, erasure: decision.recordErased || w.kind === 'delete' }], { countsGuess: decision.guessCounted, prior: stored?.value ?? null });
      release?.(); // queued: the forming batch need not wait for this request any more
      const versions = await committing;
      const version = versions.get(account);
      if (w.kind === 'put' && version !== undefined && w.record.state === 'active' && w.record.pendingLogin) this.#hold(account, { version, bytes: w.value, record: w.record });
      return this.#committed(decision);
    } catch (err) {
      return this.#failure(err, req.op);
    } finally {
      release?.();
    }
  }

  #committed(decision: Decision): ServiceResult {
    if (decision.guessCounted) {
      this.o.metrics.guessesCounted.inc();
      if (this.o.insecureCrashAfterCommitForTesting) process.kill(process.pid, 'SIGKILL');
    }
    if (decision.recordErased) this.o.metrics.recordsErased.inc();
    return { kind: 'answer', decision };
  }

  /**
   * The sweep index entry for a record that will have spent its last guess, written before
   * the record itself: a failure answers 503 store-unavailable with nothing committed.
   */
  async #scheduleSweep(account: string, eraseAt: number | null, op: string): Promise<ServiceResult | null> {
    if (eraseAt === null) return null;
    try {
      await this.o.store.scheduleSweep(account, eraseAt);
      return null;
    } catch (err) {
      if (err instanceof StoreError) return { kind: 'error', code: 'store-unavailable', op, detail: `sweep index: ${err.message}` };
      throw err;
    }
  }

  #hold(account: string, entry: { version: string; bytes: Uint8Array; record: AccountRecord }): void {
    if (this.#pendingLogins.size >= MAX_PENDING_LOGINS) {
      const oldest = this.#pendingLogins.keys().next();
      if (!oldest.done) this.#pendingLogins.delete(oldest.value);
    }
    this.#pendingLogins.set(account, entry);
  }

  #failure(err: unknown, op: string): ServiceResult {
    if (err instanceof NotLeaderError) return { kind: 'error', code: 'not-leader', op, detail: err.message, ...(err.leader ? { leader: err.leader } : {}) };
    if (err instanceof RecordIntegrityError) return { kind: 'error', code: 'record-integrity', op };
    if (err instanceof StoreRolledBackError || err instanceof AnchorMissingError) return { kind: 'error', code: 'store-rolled-back', op, detail: err.message };
    if (err instanceof StoreError) return { kind: 'error', code: 'store-unavailable', op, detail: err.message };
    if (err instanceof PlatformError) return { kind: 'error', code: 'platform-failure', op, detail: `${err.code}: ${err.message}` };
    throw err;
  }
}
