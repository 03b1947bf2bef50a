/**
 * Token buckets keyed by account or address. Each bucket holds at most `burst` tokens
 * and refills at `perSecond`; a request takes one token or is refused with the time
 * until one is back. The map is bounded: full buckets are dropped when it grows large.
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
      if (this.#buckets.size >= this.#maxKeys) this.#sweep(now);
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

  #sweep(now: number): void {
    const { perSecond, burst } = this.#rule;
    for (const [k, b] of this.#buckets) if (b.tokens + ((now - b.at) / 1000) * perSecond >= burst) this.#buckets.delete(k);
    // Still full of active keys: forget the oldest half rather than grow without bound.
    if (this.#buckets.size >= this.#maxKeys) {
      let drop = this.#buckets.size / 2;
      for (const k of this.#buckets.keys()) {
        if (drop-- <= 0) break;
        this.#buckets.delete(k);
      }
    }
  }
}
