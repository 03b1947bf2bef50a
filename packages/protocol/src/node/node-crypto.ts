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
 * hashed first when longer than the 64-byte block. Both hash inputs are built in two
 * scratch buffers kept by this module (hashing is synchronous: no call can interleave),
 * so a call allocates only its result (digests as latin1 strings, above): cheaper than
 * createHmac (no Hmac object and key setup) and than allocating the padded inputs per
 * call. The padded keys, and a long key's hash, are zeroed before returning (HKDF's keys
 * are secrets). Checked against createHmac for keys of
 * 0–200 bytes in test/crypto-provider.test.ts.
 */
let scratchInner = new Uint8Array(64 + 256);
const scratchOuter = new Uint8Array(96);
function hmacOneShot(hash: OneShot, key: Uint8Array, data: Uint8Array): Uint8Array {
  const k = key.length > 64 ? sha256OneShot(hash, key) : key;
  if (scratchInner.length < 64 + data.length) scratchInner = new Uint8Array(64 + data.length);
  const inner = scratchInner;
  const outer = scratchOuter;
  try {
    inner.fill(0, 0, 64);
    inner.set(k, 0);
    for (let i = 0; i < 64; i++) inner[i]! ^= 0x36;
    inner.set(data, 64);
    outer.fill(0, 0, 64);
    outer.set(k, 0);
    for (let i = 0; i < 64; i++) outer[i]! ^= 0x5c;
    digestInto(hash, inner.subarray(0, 64 + data.length), outer, 64);
    return sha256OneShot(hash, outer);
  } finally {
    inner.fill(0, 0, 64 + data.length); // the padded key, and the message (an HKDF input may be a secret)
    outer.fill(0);
    if (k !== key) k.fill(0);
  }
}

export const nodeCryptoProvider: CryptoProvider = {
  name: 'node:crypto',
  synchronous: true,
  sha256: oneShot ? (data) => sha256OneShot(oneShot, data) : (data) => u8(createHash('sha256').update(data).digest()),
  hmacSha256: oneShot ? (key, data) => hmacOneShot(oneShot, key, data) : (key, data) => u8(createHmac('sha256', key).update(data).digest()),
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
      return u8(Buffer.concat([d.update(ciphertext.subarray(0, ciphertext.length - 16)), d.final()]));
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
