/**
 * Token buckets keyed by account or address. Each bucket holds at most `burst` tokens
 * and refills at `perSecond`; a request takes one token or is refused with the time
 * until one is back. The map is bounded: when it reaches `maxKeys`, buckets that have
 * refilled completely (they carry no state) are dropped; if none has, a new key is
 * refused until one has — forgetting an active bucket would reset its limit (an
 * attacker spraying fresh keys could otherwise wipe a victim's sign-in bucket).
 */
export interface BucketRule {
  readonly perSecond: number;
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class TokenBuckets {
  readonly #buckets = new Map<string, Bucket>();
  readonly #rule: BucketRule;
  readonly #now: () => number;
  readonly #maxKeys: number;
  /** While the map is full of active buckets: when the first of them will be full again. */
  #fullUntil = 0;

  constructor(rule: BucketRule, options: { now?: () => number; maxKeys?: number } = {}) {
    this.#rule = rule;
    this.#now = options.now ?? Date.now;
    this.#maxKeys = options.maxKeys ?? 100_000;
  }

  /** Takes a token: 0 when allowed, else the seconds to wait (≥ 1). */
  take(key: string): number {
    const now = this.#now();
    const { perSecond, burst } = this.#rule;
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= this.#maxKeys) {
        if (now < this.#fullUntil) return Math.max(1, Math.ceil((this.#fullUntil - now) / 1000));
        this.#sweep(now);
        if (this.#buckets.size >= this.#maxKeys) return Math.max(1, Math.ceil((this.#fullUntil - now) / 1000));
      }
      b = { tokens: burst, at: now };
      this.#buckets.set(key, b);
    } else {
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * perSecond);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / perSecond));
  }

  /** Gives back a token taken by `take` (an attempt that turned out not to count). */
  refund(key: string): void {
    const b = this.#buckets.get(key);
    if (b) b.tokens = Math.min(this.#rule.burst, b.tokens + 1);
  }

  /** Drops the buckets that have refilled; if none could go, sets #fullUntil (O(n), at most once per refill wait). */
  #sweep(now: number): void {
    const { perSecond, burst } = this.#rule;
    let soonest = Infinity;
    for (const [k, b] of this.#buckets) {
      const tokens = b.tokens + ((now - b.at) / 1000) * perSecond;
      if (tokens >= burst) this.#buckets.delete(k);
      else soonest = Math.min(soonest, now + ((burst - tokens) / perSecond) * 1000);
    }
    this.#fullUntil = this.#buckets.size >= this.#maxKeys ? soonest : 0;
  }

  /** How many keys are tracked (tests, metrics). */
  get size(): number {
    return this.#buckets.size;
  }
}

/**
 * Failed attempts at a credential, counted per (account, address) and per account.
 * Each attempt reserves a token from both buckets (so concurrent attempts cannot all
 * slip past) and gives them back unless the credential was wrong: a correct sign-in
 * costs nothing, and a third party who fails from its own address spends its own
 * (account, address) bucket and the per-account cap, never the owner's address's.
 */
export class FailureLimit {
  constructor(
    readonly byAccountAddress: TokenBuckets,
    readonly byAccount: TokenBuckets,
  ) {}

  /**
   * Runs `check` unless either bucket is empty; the seconds to wait otherwise (> 0).
   * @returns 0 when `check` said yes, -1 when it said no (counted), else the wait
   */
  async attempt(account: string, address: string, check: () => Promise<boolean> | boolean): Promise<number> {
    const pair = `${account} ${address}`;
    const w1 = this.byAccountAddress.take(pair);
    if (w1 > 0) return w1;
    const w2 = this.byAccount.take(account);
    if (w2 > 0) {
      this.byAccountAddress.refund(pair);
      return w2;
    }
    let ok: boolean | undefined;
    try {
      ok = await check();
    } finally {
      if (ok !== false) {
        this.byAccountAddress.refund(pair);
        this.byAccount.refund(account);
      }
    }
    return ok ? 0 : -1;
  }
}
