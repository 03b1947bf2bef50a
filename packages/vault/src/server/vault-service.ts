/**
 * Glue between the pure core and the store: open the request, then decide and
 * compare-and-swap until the write commits, and only then release the answer
 * (spec §5.5: "the guess is durable before KE2 leaves").
 */
import { equalBytes } from '@coffer/protocol';
import { RecordIntegrityError, type AccountRecord } from '../core/record.js';
import { PlatformError } from '../core/platform.js';
import type { Decision, VaultCore } from '../core/vault-core.js';
import { StoreError, type RecordStore } from '../store/store.js';
import { AccountQueue } from './account-queue.js';
import type { ErrorCode } from './errors.js';
import type { VaultMetrics } from './metrics.js';

/** Attempts before giving up on an account under heavy cross-node contention. */
const MAX_CAS_ATTEMPTS = 32;
/** Records awaiting their login-finish kept decoded (bounded; oldest dropped first). */
const MAX_PENDING_LOGINS = 4096;

export type ServiceResult =
  | { readonly kind: 'answer'; readonly decision: Decision }
  | { readonly kind: 'error'; readonly code: ErrorCode; readonly op: string; readonly detail?: string };

export interface VaultServiceOptions {
  readonly core: VaultCore;
  readonly store: RecordStore;
  readonly metrics: VaultMetrics;
  /**
   * TEST ONLY: SIGKILL this process right after a guess-counting write commits and
   * before the answer leaves, to prove the count survives a crash.
   */
  readonly insecureCrashAfterCommitForTesting?: boolean;
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
  constructor(private readonly o: VaultServiceOptions) {}

  async handle(account: string, bytes: Uint8Array): Promise<ServiceResult> {
    let opened;
    try {
      opened = await this.o.core.open(account, bytes);
    } catch (err) {
      return this.#failure(err, 'unknown');
    }
    if (opened.kind === 'refused') return { kind: 'error', code: opened.code, op: 'unknown', detail: opened.message };
    const req = opened.request;
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
          if (decision.write.kind === 'put') {
            const put = await this.o.store.compareAndPut(account, decision.write.value, stored?.version ?? null);
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

  #hold(account: string, entry: { version: string; bytes: Uint8Array; record: AccountRecord }): void {
    if (this.#pendingLogins.size >= MAX_PENDING_LOGINS) {
      const oldest = this.#pendingLogins.keys().next();
      if (!oldest.done) this.#pendingLogins.delete(oldest.value);
    }
    this.#pendingLogins.set(account, entry);
  }

  #failure(err: unknown, op: string): ServiceResult {
    if (err instanceof RecordIntegrityError) return { kind: 'error', code: 'record-integrity', op };
    if (err instanceof StoreError) return { kind: 'error', code: 'store-unavailable', op, detail: err.message };
    if (err instanceof PlatformError) return { kind: 'error', code: 'platform-failure', op, detail: `${err.code}: ${err.message}` };
    throw err;
  }
}
