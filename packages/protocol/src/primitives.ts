/**
 * Cryptographic primitives behind one small provider, defaulting to WebCrypto
 * (`globalThis.crypto.subtle`) so the package runs unchanged in browsers and Node and
 * never imports `node:*`.
 *
 * Why a provider: every WebCrypto call is asynchronous and costs tens of microseconds
 * in Node, and HPKE + the response derivation make about a dozen HMAC calls per
 * message. A Node process (the vault, a CLI) may install a synchronous node:crypto
 * provider with `useCryptoProvider` — the same hook pattern as noble's
 * `etc.hmacSha256Sync`. Outputs are identical; tests check both.
 */
import { concat } from './bytes.js';
import { DecryptionError } from './errors.js';

/** WebCrypto types, named without the DOM lib (this package compiles for Node and browsers). */
export type Subtle = typeof globalThis.crypto.subtle;
export type WebCryptoKey = Awaited<ReturnType<Subtle['importKey']>>;

export type RandomSource = (length: number) => Uint8Array;
type MaybePromise<T> = T | Promise<T>;

/** A sender's ephemeral P-256 key pair (RFC 9180 §4.1 Encap). */
export interface EphemeralKeyPair {
  /** SEC1 uncompressed, 65 bytes. */
  readonly publicKey: Uint8Array;
  /** DH(skE, peer): the 32-byte x-coordinate. Rejects points not on the curve. */
  dh(peerPublicKey: Uint8Array): Promise<Uint8Array>;
}

export interface CryptoProvider {
  readonly name: string;
  /**
   * Every method above and below returns its value, never a Promise (node:crypto): HPKE
   * then runs its key schedule without a promise per HMAC (hpke.ts, envelope.ts).
   */
  readonly synchronous?: boolean;
  sha256(data: Uint8Array): MaybePromise<Uint8Array>;
  hmacSha256(key: Uint8Array, data: Uint8Array): MaybePromise<Uint8Array>;
  /** AES-GCM with a 16- or 32-byte key, 12-byte nonce; returns ciphertext || tag. */
  aesGcmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): MaybePromise<Uint8Array>;
  /** `null` when authentication fails. */
  aesGcmOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): MaybePromise<Uint8Array | null>;
  generateP256(): MaybePromise<EphemeralKeyPair>;
  /**
   * Synchronous providers only, optional: SHA-256 of `data` written to `out[at..at+32]`
   * (no result array per hash: the vault's record tree hashes into its own arrays).
   */
  sha256Into?(data: Uint8Array, out: Uint8Array, at: number): void;
  /**
   * Synchronous providers only, optional: HMAC-SHA256(key, m0 ‖ m1 ‖ m2 ‖ m3) written to
   * `out[at..at+32]`, the message given in parts so callers need no `concat`. `out` may
   * be `key` or a part (everything is read before the MAC is written).
   */
  hmacSha256Into?(key: Uint8Array, out: Uint8Array, at: number, m0: Uint8Array, m1?: Uint8Array, m2?: Uint8Array, m3?: Uint8Array): void;
}

/** HMAC-SHA256 of a message in parts, written into the caller's array (`CryptoProvider.hmacSha256Into`). */
export type HmacInto = (key: Uint8Array, out: Uint8Array, at: number, m0: Uint8Array, m1?: Uint8Array, m2?: Uint8Array, m3?: Uint8Array) => void;

const subtle = (): Subtle => globalThis.crypto.subtle;

export const webCryptoProvider: CryptoProvider = {
  name: 'webcrypto',
  async sha256(data) {
    return new Uint8Array(await subtle().digest('SHA-256', data));
  },
  async hmacSha256(key, data) {
    // An empty HMAC key is legal (RFC 2104 pads it) but WebCrypto refuses zero-length
    // raw keys; a block of zeros is the same key after HMAC's padding.
    const raw = key.length === 0 ? new Uint8Array(64) : key;
    const k = await subtle().importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return new Uint8Array(await subtle().sign('HMAC', k, data));
  },
  async aesGcmSeal(key, nonce, aad, plaintext) {
    const k = await subtle().importKey('raw', key, 'AES-GCM', false, ['encrypt']);
    return new Uint8Array(await subtle().encrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad }, k, plaintext));
  },
  async aesGcmOpen(key, nonce, aad, ciphertext) {
    const k = await subtle().importKey('raw', key, 'AES-GCM', false, ['decrypt']);
    try {
      return new Uint8Array(await subtle().decrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad }, k, ciphertext));
    } catch {
      return null;
    }
  },
  async generateP256() {
    const pair = (await subtle().generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits'])) as { privateKey: WebCryptoKey; publicKey: WebCryptoKey };
    const publicKey = new Uint8Array(await subtle().exportKey('raw', pair.publicKey));
    return {
      publicKey,
      async dh(peer: Uint8Array) {
        const pub = await subtle().importKey('raw', peer, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
        return new Uint8Array(await subtle().deriveBits({ name: 'ECDH', public: pub }, pair.privateKey, 256));
      },
    };
  },
};

let provider: CryptoProvider = webCryptoProvider;

/** Installs the provider every primitive below uses from now on (process-wide). */
export function useCryptoProvider(p: CryptoProvider): void {
  provider = p;
}

export function cryptoProvider(): CryptoProvider {
  return provider;
}

/** The default randomness for clients; vault code passes its Platform's instead. */
export const webRandom: RandomSource = (length) => {
  const out = new Uint8Array(length);
  // getRandomValues is limited to 65536 bytes per call; every use here is far below.
  globalThis.crypto.getRandomValues(out);
  return out;
};

/**
 * The provider's `hmacSha256Into` when it is synchronous, else one made of its synchronous
 * `hmacSha256` and a `concat` (the same MAC); null for an asynchronous provider.
 */
export function hmacSha256IntoSync(): HmacInto | null {
  const p = provider;
  if (!p.synchronous) return null;
  if (p.hmacSha256Into) return p.hmacSha256Into;
  const hmac = p.hmacSha256 as (key: Uint8Array, data: Uint8Array) => Uint8Array;
  return (key, out, at, m0, m1, m2, m3) => {
    const parts = [m0];
    for (const m of [m1, m2, m3]) if (m) parts.push(m);
    out.set(hmac(key, concat(...parts)), at);
  };
}

/** The provider's `sha256Into` when it is synchronous, else one made of its synchronous `sha256`; null for an asynchronous provider. */
export function sha256IntoSync(): ((data: Uint8Array, out: Uint8Array, at: number) => void) | null {
  const p = provider;
  if (!p.synchronous) return null;
  if (p.sha256Into) return p.sha256Into;
  const sha = p.sha256 as (data: Uint8Array) => Uint8Array;
  return (data, out, at) => out.set(sha(data), at);
}

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return provider.sha256(data);
}

export async function hmacSha256(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  return provider.hmacSha256(key, data);
}

/** RFC 5869 §2.2. */
export function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Promise<Uint8Array> {
  return hmacSha256(salt, ikm);
}

/** RFC 5869 §2.3 (L ≤ 255·32). */
export async function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  if (length > 255 * 32) throw new RangeError(`hkdfExpand: length ${length} too large`);
  if (length <= 32) {
    // One block, T(1) = HMAC(PRK, info || 0x01): every use in the protocol.
    const block = new Uint8Array(info.length + 1);
    block.set(info, 0);
    block[info.length] = 1;
    const t = await hmacSha256(prk, block);
    return length === 32 ? t : t.slice(0, length);
  }
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
  const h = hmacSha256IntoSync();
  if (h && length <= 32) return hkdfOneBlockSync(h, ikm, salt, info, length);
  return hkdfExpand(await hkdfExtract(salt, ikm), info, length);
}

const ONE = new Uint8Array([1]);
/** The PRK and T(1) of `hkdfOneBlockSync`, zeroed before it returns. */
const HKDF_PRK = new Uint8Array(32);
const HKDF_BLOCK = new Uint8Array(32);

/**
 * HKDF (RFC 5869) for L ≤ 32 with a synchronous HMAC writing into arrays: PRK =
 * HMAC(salt, IKM), OKM = first L bytes of HMAC(PRK, info ‖ 0x01). No promise per HMAC
 * and no `concat` (the vault's login release key, owner tokens, key wrapping).
 */
export function hkdfOneBlockSync(h: HmacInto, ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  if (length > 32) throw new RangeError(`hkdfOneBlockSync: length ${length} exceeds one block`);
  const out = new Uint8Array(length);
  try {
    h(salt, HKDF_PRK, 0, ikm);
    if (length === 32) h(HKDF_PRK, out, 0, info, ONE);
    else {
      h(HKDF_PRK, HKDF_BLOCK, 0, info, ONE);
      out.set(HKDF_BLOCK.subarray(0, length));
    }
    return out;
  } finally {
    HKDF_PRK.fill(0);
    HKDF_BLOCK.fill(0);
  }
}

/** AES-GCM (key of 16 or 32 bytes, 12-byte nonce, 16-byte tag appended). */
export async function aesGcmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  return provider.aesGcmSeal(key, nonce, aad, plaintext);
}

/** `aesGcmSeal` without a promise when the provider is synchronous (its value), else its promise. */
export function aesGcmSealNow(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array | Promise<Uint8Array> {
  return provider.aesGcmSeal(key, nonce, aad, plaintext);
}

/** `aesGcmOpen` without a promise when the provider is synchronous (its value), else its promise. @throws DecryptionError */
export function aesGcmOpenNow(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Uint8Array | Promise<Uint8Array> {
  if (!provider.synchronous) return aesGcmOpen(key, nonce, aad, ciphertext);
  if (ciphertext.length < 16) throw new DecryptionError();
  const plain = provider.aesGcmOpen(key, nonce, aad, ciphertext) as Uint8Array | null;
  if (!plain) throw new DecryptionError();
  return plain;
}

/** @throws DecryptionError on any authentication failure. */
export async function aesGcmOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
  if (ciphertext.length < 16) throw new DecryptionError();
  const plain = await provider.aesGcmOpen(key, nonce, aad, ciphertext);
  if (!plain) throw new DecryptionError();
  return plain;
}

export async function generateEphemeral(): Promise<EphemeralKeyPair> {
  return provider.generateP256();
}
