/**
 * Symmetric primitives over WebCrypto (`globalThis.crypto.subtle`), so the package runs
 * unchanged in Node and browsers and never imports `node:*`.
 */
import { DecryptionError } from './errors.js';

/** WebCrypto types, named without the DOM lib (this package compiles for Node and browsers). */
export type Subtle = typeof globalThis.crypto.subtle;
export type WebCryptoKey = Awaited<ReturnType<Subtle['importKey']>>;

const subtle = (): Subtle => globalThis.crypto.subtle;

export type RandomSource = (length: number) => Uint8Array;

/** The default randomness for clients; vault code passes its Platform's instead. */
export const webRandom: RandomSource = (length) => {
  const out = new Uint8Array(length);
  // getRandomValues is limited to 65536 bytes per call; every use here is far below.
  globalThis.crypto.getRandomValues(out);
  return out;
};

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest('SHA-256', data));
}

export async function hmacSha256(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  // An empty HMAC key is legal (RFC 2104 pads it) but WebCrypto refuses zero-length raw
  // keys; a block of zeros is the same key after HMAC's padding.
  const raw = key.length === 0 ? new Uint8Array(64) : key;
  const k = await subtle().importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await subtle().sign('HMAC', k, data));
}

/** RFC 5869 §2.2. */
export function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Promise<Uint8Array> {
  return hmacSha256(salt, ikm);
}

/** RFC 5869 §2.3 (L ≤ 255·32). */
export async function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  if (length > 255 * 32) throw new RangeError(`hkdfExpand: length ${length} too large`);
  const out = new Uint8Array(length);
  let prev: Uint8Array = new Uint8Array(0);
  for (let i = 0, at = 0; at < length; i++) {
    const block = new Uint8Array(prev.length + info.length + 1);
    block.set(prev, 0);
    block.set(info, prev.length);
    block[block.length - 1] = i + 1;
    prev = await hmacSha256(prk, block);
    out.set(prev.subarray(0, Math.min(32, length - at)), at);
    at += 32;
  }
  return out;
}

export async function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  return hkdfExpand(await hkdfExtract(salt, ikm), info, length);
}

/** AES-GCM (key of 16 or 32 bytes, 12-byte nonce, 16-byte tag appended). */
export async function aesGcmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const k = await subtle().importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  return new Uint8Array(await subtle().encrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad }, k, plaintext));
}

/** @throws DecryptionError on any authentication failure. */
export async function aesGcmOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
  if (ciphertext.length < 16) throw new DecryptionError();
  const k = await subtle().importKey('raw', key, 'AES-GCM', false, ['decrypt']);
  try {
    return new Uint8Array(await subtle().decrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad }, k, ciphertext));
  } catch {
    throw new DecryptionError();
  }
}
