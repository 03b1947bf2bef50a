/**
 * The link MAC of every forwarded vault message (spec/relay-api.md §2), computed as
 * @coffer/protocol's `relayAuthHeader` computes it, byte for byte, with less work per
 * message (issue 13, relay CPU per recovery):
 *
 * - the constant start of the MAC input (label, method, path) is encoded once;
 * - the input is written into one buffer kept by the signer (no concat of six encoded
 *   pieces, no TextEncoder per message);
 * - HMAC-SHA256 (RFC 2104) runs on the key's inner and outer pads, XORed once at start:
 *   two one-shot SHA-256 calls over buffers that already start with the pad (no Hmac
 *   object, no key setup per message); digests come back as latin1 strings written into
 *   those buffers, not as Buffers (off-heap allocations the GC must sweep);
 * - the nonce is read as hex straight from the random pool (16 fresh bytes per message,
 *   never handed out twice, wiped from the pool once used).
 *
 * The key and its pads live as long as the signer, as the key alone did before.
 * link-signer.test.ts checks the header against `relayAuthHeader` and `verifyRelayAuth`.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { RELAY_LINK_KEY_LENGTH, RELAY_LINK_LABEL } from '@coffer/protocol';
import { nodeHash } from './node-hash.js';

/** `crypto.hash` as the signer uses it (node-hash.ts; null: createHash/createHmac do the work). */
export type OneShotHash = (algorithm: 'sha256', data: Uint8Array, outputEncoding: 'latin1' | 'hex') => string;
const ONE_SHOT: OneShotHash | null = nodeHash;

const BLOCK = 64;
const DIGEST = 32;
/** Room for the account and the rest of the input; a longer account gets a buffer of its own. */
const INPUT_ROOM = 1024;

/** Hex nonces of `length` bytes cut from a pool that one randomBytes call refills. */
export function hexNonceSource(length = 16, poolBytes = 4096): () => string {
  let pool = Buffer.alloc(0);
  let at = 0;
  return () => {
    if (at + length > pool.length) {
      pool = randomBytes(poolBytes);
      at = 0;
    }
    const n = pool.toString('hex', at, at + length);
    pool.fill(0, at, at + length);
    at += length;
    return n;
  };
}

export class LinkSigner {
  /** ipad || label \0 method \0 path \0, then the per-message rest is written after it. */
  readonly #inner: Buffer;
  readonly #fixed: number;
  /** opad || inner digest. */
  readonly #outer: Buffer;
  readonly #nonce: () => string;
  readonly #hash: OneShotHash | null;
  /** For createHmac where Node has no one-shot hash. */
  readonly #key: Buffer;

  /** `oneShot`: null computes with createHash/createHmac (Node before 20.12; tests). */
  constructor(linkKey: Uint8Array, method: string, path: string, nonce: () => string = hexNonceSource(), oneShot: OneShotHash | null = ONE_SHOT) {
    if (linkKey.length !== RELAY_LINK_KEY_LENGTH) throw new RangeError(`relay link key: expected ${RELAY_LINK_KEY_LENGTH} bytes, got ${linkKey.length}`);
    const prefix = Buffer.from(`${RELAY_LINK_LABEL}\0${method}\0${path}\0`, 'utf8');
    this.#fixed = BLOCK + prefix.length;
    this.#inner = Buffer.alloc(this.#fixed + INPUT_ROOM);
    this.#outer = Buffer.alloc(BLOCK + DIGEST);
    for (let i = 0; i < BLOCK; i++) {
      const k = i < linkKey.length ? linkKey[i]! : 0;
      this.#inner[i] = k ^ 0x36;
      this.#outer[i] = k ^ 0x5c;
    }
    prefix.copy(this.#inner, BLOCK);
    this.#nonce = nonce;
    this.#hash = oneShot;
    this.#key = Buffer.from(linkKey);
  }

  /** The `coffer-relay-auth` value for `account` and `body`, stamped `now` (unix ms). */
  header(account: string, body: Uint8Array, now: number): string {
    const t = String(Math.floor(now));
    const n = this.#nonce();
    const tail = `${account}\0${t}\0${n}\0`;
    const need = this.#fixed + Buffer.byteLength(tail, 'utf8') + DIGEST;
    const input = need <= this.#inner.length ? this.#inner : Buffer.concat([this.#inner.subarray(0, this.#fixed), Buffer.alloc(need - this.#fixed)]);
    let at = this.#fixed + input.write(tail, this.#fixed, 'utf8');
    const h = this.#hash;
    if (h === null) {
      at += createHash('sha256').update(body).digest().copy(input, at);
      return `v2,t=${t},n=${n},mac=${createHmac('sha256', this.#key).update(input.subarray(BLOCK, at)).digest('hex')}`;
    }
    at += input.write(h('sha256', body, 'latin1'), at, 'latin1');
    this.#outer.write(h('sha256', input.subarray(0, at), 'latin1'), BLOCK, 'latin1');
    return `v2,t=${t},n=${n},mac=${h('sha256', this.#outer, 'hex')}`;
  }
}
