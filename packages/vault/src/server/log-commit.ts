/**
 * Commit before answer, with rollback protection (spec §13.4): the group-commit loop of
 * a one-node group (the embedded SQLite default; majority = 1).
 *
 * Requests enqueue their record change; the loop takes everything queued, makes ONE log
 * entry for it (RollbackGuard.append), commits the changes and the entry in one store
 * transaction fenced on the log's head, captures the entry (the anchor write, durable on
 * the platform) and only then resolves every request of the batch, which may then
 * release its answer. While a batch commits, the next one gathers: batching is what
 * keeps the anchor write (an fsync, or an HSM object write) off each request's path.
 *
 * Any failure between append and capture discards the guard: the next request resumes
 * from the anchor and the store (an entry the store did commit is then found past the
 * anchor, verified and captured; one it did not is simply absent). A store that does not
 * continue the anchor — restored from a snapshot, an entry deleted or edited, records
 * that do not give the root — leaves the vault refusing everything (`store-rolled-back`,
 * metric coffer_vault_rollbacks_detected_total, an error log line) until it is fixed.
 */
import type { Platform } from '../core/platform.js';
import { AnchorMissingError, encodeEntry, RollbackGuard, StoreRolledBackError } from '../core/rollback.js';
import type { BatchChange, LogStore, RecordStore, RecordVersion } from '../store/store.js';
import type { VaultMetrics } from './metrics.js';
import type { ServiceLog } from './vault-service.js';

/** After a failed resume, requests are refused with the same error this long before trying again. */
const RESUME_RETRY_MS = 1000;
/**
 * Commit delay (like PostgreSQL's commit_delay with commit_siblings = 1): a batch is held
 * open at most this long while other requests are still deciding (they announced
 * themselves with `expect()`), so one log entry, one store transaction + WAL fsync and
 * one anchor write cover them too. With no other request in progress there is no delay.
 */
const DEFAULT_COMMIT_DELAY_MS = 4;

export interface LogCommitterOptions {
  readonly platform: Platform;
  readonly store: RecordStore & LogStore;
  /** The group's 16-byte ID (config `group.id`; the embedded default derives one). */
  readonly group: Uint8Array;
  readonly metrics: VaultMetrics;
  readonly log?: ServiceLog;
  /** With no anchor and a non-empty store: adopt the store's head (operator decision, spec §13.9). */
  readonly adoptWithoutAnchor?: boolean;
  /** The longest a batch waits for requests still deciding (default 4 ms; 0: never waits). */
  readonly commitDelayMs?: number;
  /** TEST ONLY: SIGKILL after a batch marked `crashBeforeCapture` commits in the store, before its anchor write. */
  readonly insecureCrashBeforeCaptureForTesting?: boolean;
}

interface Waiting {
  readonly changes: readonly BatchChange[];
  readonly crashBeforeCapture: boolean;
  readonly resolve: (versions: Map<string, RecordVersion>) => void;
  readonly reject: (err: Error) => void;
}

/** What the vault service needs from rollback protection (one-node LogCommitter, fleet FleetCommitter). */
export interface CommitOptions {
  readonly countsGuess?: boolean;
  readonly prior?: Uint8Array | null;
}

export interface Committer {
  /** Ready to decide (resumed; in a fleet: leading). @throws StoreRolledBackError, AnchorMissingError, NotLeaderError, StoreError */
  ready(): Promise<unknown>;
  /** The stored bytes must be what the captured root says. */
  check(account: string, stored: Uint8Array | null): Promise<void>;
  /** Whether `stored` is what the captured root says, quietly (no metric, no ALARM): for a possibly stale read that is re-read on false. */
  matches(account: string, stored: Uint8Array | null): Promise<boolean>;
  /**
   * Commits `changes` in the next batch; resolves once its entry is committed (captured; in a
   * fleet: by a majority). `prior`: the stored bytes of the (one) changed account that the
   * decision was made on (null: none); a fleet refuses the change when the root it is appended
   * to no longer gives them (the leader changed in between: see FleetCommitter).
   */
  commit(changes: readonly BatchChange[], options?: CommitOptions): Promise<Map<string, RecordVersion>>;
  /**
   * A request is deciding and will probably commit soon: the batch forming may wait for it
   * (commit delay). The returned function says it has queued its change or will not
   * commit; calling it more than once is harmless.
   */
  expect?(): () => void;
  /** Fleet: the refusal to give before any work (decrypting the request) when this node does not lead; null: go on. */
  refuseEarly?(): Error | null;
}

export class LogCommitter implements Committer {
  #guard: RollbackGuard | null = null;
  #resuming: Promise<RollbackGuard> | null = null;
  #failure: { err: Error; at: number } | null = null;
  #queue: Waiting[] = [];
  #running = false;
  /** Requests that announced a commit (expect()) and have not queued it yet. */
  #expected = 0;
  /** Wakes a batch held open by the commit delay. */
  #wake: (() => void) | null = null;

  constructor(private readonly o: LogCommitterOptions) {}

  expect(): () => void {
    this.#expected++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.#expected === 0) this.#wake?.();
    };
  }

  /** Holds the forming batch open until no announced request is left deciding, the batch is full, or the delay ends. */
  async #gather(max: number): Promise<void> {
    const delay = this.o.commitDelayMs ?? DEFAULT_COMMIT_DELAY_MS;
    if (delay <= 0 || this.#expected === 0 || this.#queued() >= max) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.o.metrics.commitDelayExpired.inc();
        this.#wake?.();
      }, delay);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
    });
  }

  #queued(): number {
    let count = 0;
    for (const w of this.#queue) count += w.changes.length;
    return count;
  }

  /** The guard, resuming from the anchor and the store when there is none. */
  ready(): Promise<RollbackGuard> {
    if (this.#guard) return Promise.resolve(this.#guard);
    if (this.#failure && Date.now() - this.#failure.at < RESUME_RETRY_MS) {
      if (this.#failure.err instanceof StoreRolledBackError || this.#failure.err instanceof AnchorMissingError) this.o.metrics.rollbacksDetected.inc();
      return Promise.reject(this.#failure.err);
    }
    this.#resuming ??= this.#resume().finally(() => {
      this.#resuming = null;
    });
    return this.#resuming;
  }

  async #resume(): Promise<RollbackGuard> {
    const raw = await this.o.platform.readAnchor();
    const from = raw === null ? 0 : Number(new DataView(raw.buffer, raw.byteOffset + 16, 8).getBigUint64(0));
    try {
      const [entries, records] = await Promise.all([this.o.store.readLog(from), this.o.store.listRecords()]);
      const r = await RollbackGuard.resume(this.o.platform, this.o.group, entries, records, { adoptWithoutAnchor: this.o.adoptWithoutAnchor ?? false });
      if (r.adopted) this.o.log?.warn({ index: r.guard.captured.index }, 'rollback protection: this node had no anchor and ADOPTED the store\'s log head (operator decision: adoptLogHead)');
      this.o.log?.info({ index: r.guard.captured.index }, 'rollback protection: on; resumed from the anchor (spec §13)');
      if (r.caughtUp > 0) this.o.log?.info({ index: r.guard.captured.index, caughtUp: r.caughtUp }, 'rollback protection: captured log entries committed before a crash');
      this.#guard = r.guard;
      this.#failure = null;
      // Adopted records with no log: the first entry covers them, now (not at the first write).
      if (r.adopted && r.guard.captured.index === 0) await this.commit([]);
      return r.guard;
    } catch (err) {
      if (err instanceof StoreRolledBackError || err instanceof AnchorMissingError) {
        this.o.metrics.rollbacksDetected.inc();
        this.o.log?.error({ err: err.message, anchorIndex: from }, 'ALARM: rollback protection refuses the store; every request is refused until it is restored (docs/operations.md, "Store rolled back")');
      }
      this.#failure = { err: err as Error, at: Date.now() };
      throw err;
    }
  }

  /**
   * Before a decision: the stored bytes must be what the captured root says.
   * @throws StoreRolledBackError (metric and log line done here), or what resuming throws
   */
  async check(account: string, stored: Uint8Array | null): Promise<void> {
    await checkRecord(await this.ready(), account, stored, this.o.metrics, this.o.log);
  }

  async matches(account: string, stored: Uint8Array | null): Promise<boolean> {
    return recordMatches(await this.ready(), account, stored);
  }

  /** Commits `changes` in the next batch; resolves once its entry is captured. */
  commit(changes: readonly BatchChange[], options: CommitOptions = {}): Promise<Map<string, RecordVersion>> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ changes, crashBeforeCapture: options.countsGuess === true, resolve, reject });
      if (!this.#running) void this.#loop();
      else if (this.#wake && this.#queued() >= (this.o.store.maxBatchChanges ?? Infinity)) this.#wake();
    });
  }

  async #loop(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0) {
        // Let the requests decided in this turn join the batch.
        await new Promise((r) => setImmediate(r));
        const max = this.o.store.maxBatchChanges ?? Infinity;
        await this.#gather(max);
        let n = 0;
        let count = 0;
        while (n < this.#queue.length && (n === 0 || count + this.#queue[n]!.changes.length <= max)) count += this.#queue[n++]!.changes.length;
        const batch = this.#queue.splice(0, n);
        const changes = batch.flatMap((w) => w.changes);
        try {
          const guard = await this.ready();
          let versions: Map<string, RecordVersion>;
          try {
            const entry = await guard.append(changes);
            versions = await this.o.store.commitBatch(changes, entry.index, encodeEntry(entry));
            if (this.o.insecureCrashBeforeCaptureForTesting && batch.some((w) => w.crashBeforeCapture)) process.kill(process.pid, 'SIGKILL');
            await guard.capture(entry);
          } catch (err) {
            this.#guard = null; // resumed from the anchor and the store before the next batch
            throw err;
          }
          this.o.metrics.logEntries.inc();
          this.o.metrics.logBatchSize.observe(changes.length);
          // One map for the batch: accounts are distinct under the per-account queue.
          for (const w of batch) w.resolve(versions);
        } catch (err) {
          for (const w of batch) w.reject(err as Error);
        }
      }
    } finally {
      this.#running = false;
    }
  }
}

/** The record check without its alarm: false when `stored` does not give the captured root. */
export async function recordMatches(guard: RollbackGuard, account: string, stored: Uint8Array | null): Promise<boolean> {
  try {
    await guard.check(account, stored);
    return true;
  } catch (err) {
    if (err instanceof StoreRolledBackError) return false;
    throw err;
  }
}

/**
 * The record check both committers make before a decision (one node and fleet): a record
 * that does not give the captured root raises the rollback metric and an ALARM line.
 */
export async function checkRecord(guard: RollbackGuard, account: string, stored: Uint8Array | null, metrics: VaultMetrics, log: ServiceLog | undefined): Promise<void> {
  try {
    await guard.check(account, stored);
  } catch (err) {
    if (err instanceof StoreRolledBackError) {
      metrics.rollbacksDetected.inc();
      log?.error({ account: account.slice(0, 128), err: err.message }, 'ALARM: a record does not match the captured log root (store rolled back or edited); refused');
    }
    throw err;
  }
}
