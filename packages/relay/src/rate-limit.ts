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

/** The key of a client address for the limits: an IPv4 address as is, an IPv6 address by its /64 (one customer site or host usually gets a whole /64: keying by full address would give it 2^64 buckets). */
export function addressKey(ip: string): string {
  let a = ip;
  if (a.startsWith('::ffff:') && a.includes('.')) return a.slice(7);
  if (!a.includes(':')) return a;
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  // An embedded IPv4 tail (a::1.2.3.4) counts as two groups; only the first four matter here.
  const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}
