/**
 * Relay→vault link authentication (spec/relay-api.md §2): the vault accepts an account
 * ID only from its own front ends. Each forwarded request carries
 *
 *   coffer-relay-auth: v2,t=<unix ms>,n=<32 hex>,mac=<hex>
 *   mac = HMAC-SHA256(linkKey, "coffer-relay-link/v2" || 0x00 || method || 0x00 || path
 *                     || 0x00 || account || 0x00 || t || 0x00 || n || 0x00 || SHA-256(body))
 *
 * `t` and `n` enter the MAC as their ASCII text, exactly as sent. `n` is a random nonce:
 * the vault remembers the nonces it accepted until their `t` is out of the skew window, so
 * a request captured on the link cannot be replayed (RelayLinkReplayCache). Isomorphic:
 * it uses the package's crypto provider (node:crypto where the process installed it).
 */
import { concat, toHex, utf8 } from './bytes.js';
import { hmacSha256, hmacSha256IntoSync, sha256, sha256IntoSync, webRandom, type RandomSource } from './primitives.js';

export const RELAY_AUTH_HEADER = 'coffer-relay-auth';
export const RELAY_LINK_LABEL = 'coffer-relay-link/v2';
export const RELAY_LINK_KEY_LENGTH = 32;
/** The vault refuses a `t` further than this from its clock. */
export const RELAY_LINK_MAX_SKEW_MS = 30_000;

export interface RelayLinkRequest {
  readonly method: string;
  readonly path: string;
  readonly account: string;
  readonly body: Uint8Array;
}

const ZERO = new Uint8Array([0]);

/** SHA-256(body) for the synchronous path (a public value). */
const BODY_HASH = new Uint8Array(32);

export async function relayLinkMac(linkKey: Uint8Array, request: RelayLinkRequest, t: string, n: string): Promise<Uint8Array> {
  if (linkKey.length !== RELAY_LINK_KEY_LENGTH) throw new RangeError(`relay link key: expected ${RELAY_LINK_KEY_LENGTH} bytes, got ${linkKey.length}`);
  const h = hmacSha256IntoSync();
  const hash = sha256IntoSync();
  if (h && hash) {
    // The same input with one UTF-8 encoding: the fields joined by NUL (U+0000 encodes as
    // the 0x00 separator, and a NUL between fields keeps any lone surrogate at a field's
    // edge lone, so the bytes are those of the separate encodings), the body's hash as a
    // second part of the HMAC's message (no `concat`), and no promise per hash.
    const text = utf8(`${RELAY_LINK_LABEL}\0${request.method}\0${request.path}\0${request.account}\0${t}\0${n}\0`);
    hash(request.body, BODY_HASH, 0);
    const mac = new Uint8Array(32);
    h(linkKey, mac, 0, text, BODY_HASH);
    return mac;
  }
  const bodyHash = await sha256(request.body);
  const input = concat(utf8(RELAY_LINK_LABEL), ZERO, utf8(request.method), ZERO, utf8(request.path), ZERO, utf8(request.account), ZERO, utf8(t), ZERO, utf8(n), ZERO, bodyHash);
  return hmacSha256(linkKey, input);
}

/** The `coffer-relay-auth` header value for `request`, stamped `now` (unix ms) with a fresh nonce. */
export async function relayAuthHeader(linkKey: Uint8Array, request: RelayLinkRequest, now: number, rng: RandomSource = webRandom): Promise<string> {
  const t = String(Math.floor(now));
  const n = toHex(rng(16));
  return `v2,t=${t},n=${n},mac=${toHex(await relayLinkMac(linkKey, request, t, n))}`;
}

export type RelayAuthCheck = 'ok' | 'missing' | 'malformed' | 'stale' | 'bad-mac' | 'replayed';

/**
 * The nonces a vault accepted, each until its `t` leaves the skew window (then the
 * timestamp check refuses it anyway). Bounded: when full, new requests are refused
 * (`replayed`) rather than old nonces forgotten early.
 */
export class RelayLinkReplayCache {
  readonly #seen = new Map<string, number>();
  constructor(readonly maxEntries = 1_000_000) {}

  /** Records `n` (valid until `until`); false if it was seen and is still remembered, or the cache is full. */
  admit(n: string, until: number, now: number): boolean {
    if (this.#seen.size >= this.maxEntries) this.#expire(now);
    const prev = this.#seen.get(n);
    if (prev !== undefined && prev >= now) return false;
    if (this.#seen.size >= this.maxEntries) return false;
    this.#seen.set(n, until);
    return true;
  }

  get size(): number {
    return this.#seen.size;
  }

  #expire(now: number): void {
    for (const [k, until] of this.#seen) if (until < now) this.#seen.delete(k);
  }
}

/**
 * Checks a `coffer-relay-auth` header value; constant-time on the MAC. With `replays`,
 * a nonce already accepted inside the window is `replayed` (checked after the MAC, so
 * only the key's holder can fill the cache).
 */
export async function verifyRelayAuth(linkKey: Uint8Array, header: string | undefined, request: RelayLinkRequest, now: number, replays?: RelayLinkReplayCache): Promise<RelayAuthCheck> {
  if (header === undefined || header === '') return 'missing';
  const m = /^v2,t=(\d{1,15}),n=([0-9a-f]{32}),mac=([0-9a-f]{64})$/.exec(header);
  if (!m) return 'malformed';
  const t = m[1]!;
  const n = m[2]!;
  if (Math.abs(Number(t) - now) > RELAY_LINK_MAX_SKEW_MS) return 'stale';
  const expected = toHex(await relayLinkMac(linkKey, request, t, n));
  const given = m[3]!;
  let diff = 0;
  for (let i = 0; i < expected.length; i++) diff |= expected.charCodeAt(i) ^ given.charCodeAt(i);
  if (diff !== 0) return 'bad-mac';
  if (replays && !replays.admit(n, Number(t) + RELAY_LINK_MAX_SKEW_MS, now)) return 'replayed';
  return 'ok';
}
