/**
 * A synchronous node:crypto provider for this package's primitives, for Node services
 * (the vault, the relay). WebCrypto's asynchronous calls cost tens of microseconds each
 * in Node and HPKE makes about a dozen per message; this provider cuts the envelope's
 * cost several-fold (see the `bench:vault` notes in spec/vault-protocol.md §11). The
 * relay signs every forwarded request (relay-link.ts: a SHA-256 and an HMAC), which on
 * WebCrypto took a fifth of its CPU per recovery. Outputs are identical
 * (packages/vault/test/crypto-provider.test.ts).
 */
import * as nodeCrypto from 'node:crypto';
import { createCipheriv, createDecipheriv, createECDH, createHash, createHmac } from 'node:crypto';
import { useCryptoProvider, type CryptoProvider } from '../primitives.js';

const u8 = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

function gcm(key: Uint8Array): 'aes-128-gcm' | 'aes-256-gcm' {
  if (key.length === 16) return 'aes-128-gcm';
  if (key.length === 32) return 'aes-256-gcm';
  throw new RangeError(`AES-GCM key: expected 16 or 32 bytes, got ${key.length}`);
}

/** `crypto.hash` (Node ≥ 20.12): one-shot, about half the cost of createHash for small inputs. */
const oneShot = (nodeCrypto as { hash?: (alg: string, data: Uint8Array, enc: 'binary') => string }).hash;
type OneShot = NonNullable<typeof oneShot>;

/*
 * Digests are taken as latin1 strings (one character per byte) and copied into a plain
 * 32-byte Uint8Array, never as a Buffer: a Buffer result is an off-heap allocation that V8
 * must track and sweep at its next scavenge (a fifth of the vault's scavenge pauses went to
 * sweeping such buffers, issue 13): ~0.29 instead of ~0.62 µs per SHA-256 of 65 bytes here,
 * GC included. Like the Buffer before it, the transient string is not zeroed.
 */
function digestInto(hash: OneShot, data: Uint8Array, out: Uint8Array, at: number): void {
  const d = hash('sha256', data, 'binary'); // 'binary' is latin1
  for (let i = 0; i < 32; i++) out[at + i] = d.charCodeAt(i);
}

function sha256OneShot(hash: OneShot, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
  digestInto(hash, data, out, 0);
  return out;
}

/**
 * HMAC-SHA256 (RFC 2104) as two one-shot hashes: H((K ⊕ opad) ‖ H((K ⊕ ipad) ‖ m)), K
 * hashed first when longer than the 64-byte block, m given as up to four parts (HPKE's
 * label prefix, its input, HKDF-Expand's counter byte: no `concat` per call) and the MAC
 * written into the caller's array. Both hash inputs are built in two scratch buffers kept
 * by this module (hashing is synchronous: no call can interleave), each padded key written
 * in one pass, and the inner input handed to the hash as a view kept per length (a
 * `subarray` per call was a tenth of the call), so a call allocates nothing but the two
 * digests' transient latin1 strings: ~0.69 against ~0.88 µs per HMAC of 60 bytes with
 * the `concat` it replaces (issue 13). The padded keys, the message and a long key's hash
 * are zeroed before returning (HKDF's keys are secrets). Checked against createHmac for
 * keys of 0–200 bytes and every split of the message (test/node-crypto.test.ts).
 */
const BLOCK = 64;
let scratchInner = new Uint8Array(BLOCK + 256);
let innerViews: (Uint8Array | undefined)[] = [];
const scratchOuter = new Uint8Array(BLOCK + 32);
const longKey = new Uint8Array(32);
const NO_PART = new Uint8Array(0);

function put(dst: Uint8Array, at: number, src: Uint8Array): number {
  const n = src.length;
  if (n > 32) dst.set(src, at);
  else for (let i = 0; i < n; i++) dst[at + i] = src[i]!;
  return at + n;
}

function hmacInto(hash: OneShot, key: Uint8Array, out: Uint8Array, at: number, m0: Uint8Array, m1: Uint8Array, m2: Uint8Array, m3: Uint8Array): void {
  let k = key;
  if (k.length > BLOCK) {
    digestInto(hash, k, longKey, 0);
    k = longKey;
  }
  const length = BLOCK + m0.length + m1.length + m2.length + m3.length;
  if (scratchInner.length < length) {
    scratchInner = new Uint8Array(length);
    innerViews = [];
  }
  const inner = scratchInner;
  const outer = scratchOuter;
  try {
    const kl = k.length;
    for (let i = 0; i < kl; i++) {
      const x = k[i]!;
      inner[i] = x ^ 0x36;
      outer[i] = x ^ 0x5c;
    }
    for (let i = kl; i < BLOCK; i++) {
      inner[i] = 0x36;
      outer[i] = 0x5c;
    }
    put(inner, put(inner, put(inner, put(inner, BLOCK, m0), m1), m2), m3);
    let view = innerViews[length];
    if (view === undefined) {
      view = inner.subarray(0, length);
      if (length <= 320) innerViews[length] = view;
    }
    digestInto(hash, view, outer, BLOCK);
    digestInto(hash, outer, out, at);
  } finally {
    inner.fill(0, 0, length); // the padded key, and the message (an HKDF input may be a secret)
    outer.fill(0);
    if (k !== key) longKey.fill(0);
  }
}

function hmacOneShot(hash: OneShot, key: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
  hmacInto(hash, key, out, 0, data, NO_PART, NO_PART, NO_PART);
  return out;
}

export const nodeCryptoProvider: CryptoProvider = {
  name: 'node:crypto',
  synchronous: true,
  sha256: oneShot ? (data) => sha256OneShot(oneShot, data) : (data) => u8(createHash('sha256').update(data).digest()),
  hmacSha256: oneShot ? (key, data) => hmacOneShot(oneShot, key, data) : (key, data) => u8(createHmac('sha256', key).update(data).digest()),
  sha256Into: oneShot
    ? (data, out, at) => digestInto(oneShot, data, out, at)
    : (data, out, at) => {
        out.set(createHash('sha256').update(data).digest(), at);
      },
  hmacSha256Into: oneShot
    ? (key, out, at, m0, m1 = NO_PART, m2 = NO_PART, m3 = NO_PART) => hmacInto(oneShot, key, out, at, m0, m1, m2, m3)
    : (key, out, at, m0, m1 = NO_PART, m2 = NO_PART, m3 = NO_PART) => {
        out.set(createHmac('sha256', key).update(m0).update(m1).update(m2).update(m3).digest(), at);
      },
  aesGcmSeal(key, nonce, aad, plaintext) {
    const c = createCipheriv(gcm(key), key, nonce);
    c.setAAD(aad);
    return u8(Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]));
  },
  aesGcmOpen(key, nonce, aad, ciphertext) {
    if (ciphertext.length < 16) return null;
    try {
      const d = createDecipheriv(gcm(key), key, nonce);
      d.setAAD(aad);
      d.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
      const plain = d.update(ciphertext.subarray(0, ciphertext.length - 16));
      const rest = d.final(); // checks the tag; GCM, a stream mode, has nothing left here
      return u8(rest.length === 0 ? plain : Buffer.concat([plain, rest]));
    } catch {
      return null;
    }
  },
  generateP256() {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    return {
      publicKey: u8(ecdh.getPublicKey()),
      // computeSecret throws for points not on the curve (RFC 9180 §7.1.4).
      dh: async (peer: Uint8Array) => u8(ecdh.computeSecret(peer)),
    };
  },
};

/** Makes this process's protocol primitives use node:crypto. */
export function installNodeCrypto(): void {
  useCryptoProvider(nodeCryptoProvider);
}
