/**
 * The vault `Platform` over a PKCS#11 token (pkcs11js; tested on SoftHSM2).
 *
 * Every key stays on the token: sealing is CKM_AES_GCM, MACs are CKM_SHA256_HMAC and
 * ECDH is CKM_ECDH1_DERIVE, all inside the token. Only ECDH outputs (the 32-byte shared
 * x-coordinate) and public keys leave it. The trusted anchor is a private CKO_DATA
 * object on the token (anchor.ts). Key transfer between tokens (the fleet ceremony) is
 * transfer.ts. Time and randomness come from this process.
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { AesGCM, ECDH1, Handle, Mechanism, PKCS11 } from 'pkcs11js';
import { ANCHOR_MAX_BYTES, checkHeadroom, PlatformError } from '../../core/platform.js';
import { AnchorWorker } from './anchor-worker.js';
import { RandomPool } from '../random-pool.js';
import type { Platform } from '../../core/platform.js';
import { isKeyHandleError, mayBeAuthFailure, toPlatformError } from './errors.js';
import { ECDH_SECRET_TEMPLATE, ecPointToRaw, findKey, readAttribute, SESSION_COPY_TEMPLATE } from './keys.js';
import type { KeyKind } from './keys.js';
import type { OpenToken, Pkcs11Options } from './token.js';
import { openToken } from './token.js';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const MAC_BYTES = 32;
const P256_POINT_BYTES = 65;

/** A `Platform` whose keys live on a PKCS#11 token. */
export interface Pkcs11Platform extends Platform {
  /**
   * Waits for running operations, fails queued ones, closes the sessions, logs out and
   * finalizes the module (the last two once no other platform in this process uses
   * them). Later calls fail with PlatformError('hsm-failure'). Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Opens the token labelled `tokenLabel` in `module` and logs in with `pin`.
 *
 * Keys are looked up by label on first use, so a missing key shows as `key-missing`
 * from the operation that needs it, not here.
 * @throws PlatformError token-missing (module cannot load, no such token),
 *   login-failed (wrong or locked PIN)
 * @throws TypeError / RangeError for malformed options
 * @example
 * const platform = await openPkcs11Platform({ module: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 'coffer', pin });
 * const sealed = await platform.seal('coffer-record-seal-v1', aad, record);
 */
export async function openPkcs11Platform(opts: Pkcs11Options): Promise<Pkcs11Platform> {
  const token = openToken(opts);
  return new Pkcs11PlatformImpl(token, opts.calls ?? 'blocking');
}

/** The calls whose pkcs11js `…Async` variants exist; `threaded` mode uses those. */
interface Calls {
  encrypt(s: Handle, data: Buffer, out: Buffer): Buffer | Promise<Buffer>;
  encryptFinal(s: Handle, out: Buffer): Buffer | Promise<Buffer>;
  decrypt(s: Handle, data: Buffer, out: Buffer): Buffer | Promise<Buffer>;
  sign(s: Handle, data: Buffer, out: Buffer): Buffer | Promise<Buffer>;
  signFinal(s: Handle, out: Buffer): Buffer | Promise<Buffer>;
  derive(s: Handle, m: Mechanism, key: Handle): Handle | Promise<Handle>;
}

function callsFor(p: PKCS11, mode: 'blocking' | 'threaded'): Calls {
  if (mode === 'threaded') {
    return {
      encrypt: (s, d, o) => p.C_EncryptAsync(s, d, o),
      encryptFinal: (s, o) => p.C_EncryptFinalAsync(s, o),
      decrypt: (s, d, o) => p.C_DecryptAsync(s, d, o),
      sign: (s, d, o) => p.C_SignAsync(s, d, o),
      signFinal: (s, o) => p.C_SignFinalAsync(s, o),
      derive: (s, m, k) => p.C_DeriveKeyAsync(s, m, k, ECDH_SECRET_TEMPLATE),
    };
  }
  return {
    encrypt: (s, d, o) => p.C_Encrypt(s, d, o),
    encryptFinal: (s, o) => p.C_EncryptFinal(s, o),
    decrypt: (s, d, o) => p.C_Decrypt(s, d, o),
    sign: (s, d, o) => p.C_Sign(s, d, o),
    signFinal: (s, o) => p.C_SignFinal(s, o),
    derive: (s, m, k) => p.C_DeriveKey(s, m, k, ECDH_SECRET_TEMPLATE),
  };
}

function gcm(nonce: Buffer, aad: Buffer): Mechanism {
  const parameter: AesGCM = { type: pkcs11js.CK_PARAMS_AES_GCM, iv: nonce, aad, ivBits: NONCE_BYTES * 8, tagBits: TAG_BYTES * 8 };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
}

/** A Buffer view of caller bytes (no copy; never kept past the call). */
function view(bytes: Uint8Array, name: string): Buffer {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function checkLabel(label: string): void {
  if (typeof label !== 'string') throw new TypeError('keyLabel must be a string');
}

/** A plain Uint8Array copy, so callers never hold a view of a pkcs11js buffer (the constructor copies in one go; `Uint8Array.from` iterated: ~4 µs for a 3 KiB record). */
function plain(b: Buffer): Uint8Array {
  return new Uint8Array(b);
}

class Pkcs11PlatformImpl implements Pkcs11Platform {
  readonly name: string;
  readonly #token: OpenToken;
  readonly #p: PKCS11;
  readonly #calls: Calls;
  /** Key handles by kind and label. Token object handles are valid in every session. */
  readonly #handles = new Map<string, Handle>();
  readonly #publicKeys = new Map<string, Uint8Array>();
  readonly #random = new RandomPool();
  readonly #anchor: AnchorWorker;
  #closed = false;

  constructor(token: OpenToken, mode: 'blocking' | 'threaded') {
    this.#token = token;
    this.#anchor = new AnchorWorker(token.module, token.slot);
    this.#p = token.pkcs11;
    this.#calls = callsFor(token.pkcs11, mode);
    this.name = `pkcs11:${token.label}`;
  }

  now(): number {
    return Date.now();
  }

  randomBytes(length: number): Uint8Array {
    return this.#random.take(length);
  }

  async seal(keyLabel: string, aad: Uint8Array, plaintext: Uint8Array, headroom = 0): Promise<Uint8Array> {
    checkLabel(keyLabel);
    const h = checkHeadroom(headroom);
    const a = view(aad, 'aad');
    const pt = view(plaintext, 'plaintext');
    const n = this.#random.take(NONCE_BYTES);
    const nonce = Buffer.from(n.buffer, n.byteOffset, n.byteLength);
    return this.#op('seal', keyLabel, 'seal', async (s, key) => {
      // [headroom zeros] || nonce || ciphertext || tag, the token writing straight into it.
      const out = Buffer.alloc(h + NONCE_BYTES + pt.length + TAG_BYTES);
      nonce.copy(out, h);
      const body = await this.#encrypt(s, key, nonce, a, pt, out.subarray(h + NONCE_BYTES));
      if (body.length !== pt.length + TAG_BYTES) {
        throw new PlatformError(`pkcs11: AES-GCM returned ${body.length} bytes for ${pt.length}`, 'hsm-failure');
      }
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    });
  }

  /**
   * `null` for every authentication failure: input shorter than nonce + tag (never
   * sent to the token), or a C_Decrypt that fails with one of the codes modules use
   * for a bad tag (CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE,
   * CKR_DATA_INVALID, CKR_DATA_LEN_RANGE, and the generic CKR_GENERAL_ERROR /
   * CKR_FUNCTION_FAILED that SoftHSM2 gives) *and* after which a seal-then-unseal probe
   * on the same session and key succeeds, proving the token works. Anything else — any
   * other code, a failed C_DecryptInit, a failed probe — is a PlatformError.
   */
  async unseal(keyLabel: string, aad: Uint8Array, sealed: Uint8Array): Promise<Uint8Array | null> {
    checkLabel(keyLabel);
    const a = view(aad, 'aad');
    const input = view(sealed, 'sealed');
    if (input.length < NONCE_BYTES + TAG_BYTES) {
      this.#assertOpen();
      return null;
    }
    const nonce = input.subarray(0, NONCE_BYTES);
    const body = input.subarray(NONCE_BYTES);
    return this.#op('unseal', keyLabel, 'seal', async (s, key) => {
      try {
        this.#p.C_DecryptInit(s, gcm(nonce, a), key);
      } catch (err) {
        throw toPlatformError(err, 'C_DecryptInit');
      }
      let pt: Buffer;
      try {
        // SoftHSM2 wants room for the whole input, tag included, or says CKR_BUFFER_TOO_SMALL.
        pt = await this.#calls.decrypt(s, body, Buffer.alloc(body.length));
      } catch (err) {
        if (!mayBeAuthFailure(err)) throw toPlatformError(err, 'C_Decrypt');
        await this.#probe(s, key, err);
        return null;
      }
      // A view of the output buffer allocated above for this call alone (Buffer.alloc is
      // never pooled), not a copy: one plaintext copy in memory instead of two.
      return new Uint8Array(pt.buffer, pt.byteOffset, pt.byteLength);
    });
  }

  async mac(keyLabel: string, data: Uint8Array): Promise<Uint8Array> {
    checkLabel(keyLabel);
    const d = view(data, 'data');
    return this.#op('mac', keyLabel, 'mac', async (s, key) => {
      this.#p.C_SignInit(s, { mechanism: pkcs11js.CKM_SHA256_HMAC }, key);
      const out = Buffer.alloc(MAC_BYTES);
      // pkcs11js turns an empty input buffer into CKR_ARGUMENTS_BAD; C_SignFinal alone MACs "".
      const tag = await (d.length === 0 ? this.#calls.signFinal(s, out) : this.#calls.sign(s, d, out));
      if (tag.length !== MAC_BYTES) throw new PlatformError(`pkcs11: HMAC returned ${tag.length} bytes`, 'hsm-failure');
      return plain(tag);
    });
  }

  async ecdh(keyLabel: string, peerPublicKey: Uint8Array): Promise<Uint8Array> {
    checkLabel(keyLabel);
    const peer = view(peerPublicKey, 'peerPublicKey');
    checkP256Point(peer);
    // PKCS#11 2.40 §2.3.13: a token MUST accept the raw X9.62 point (DER-wrapped is
    // optional; SoftHSM2 takes both). A copy, since the call may outlive the caller's view.
    const publicData = Buffer.from(peer);
    const parameter: ECDH1 = { type: pkcs11js.CK_PARAMS_EC_DH, kdf: pkcs11js.CKD_NULL, publicData };
    const mechanism: Mechanism = { mechanism: pkcs11js.CKM_ECDH1_DERIVE, parameter };
    return this.#op('ecdh', keyLabel, 'ecdh-private', async (s, key) => {
      const secret = await this.#calls.derive(s, mechanism, key);
      try {
        const value = readAttribute(this.#p, s, secret, pkcs11js.CKA_VALUE);
        if (value.length !== 32) throw new PlatformError(`pkcs11: ECDH gave ${value.length} bytes`, 'hsm-failure');
        return plain(value);
      } finally {
        this.#p.C_DestroyObject(s, secret);
      }
    });
  }

  /**
   * Two private CKO_DATA slot objects, written in place (anchor.ts). Both calls run on
   * the anchor thread (anchor-worker.ts), one at a time in call order, so two writes from
   * this process never interleave and the event loop keeps serving while the token
   * stores the object; `writeAnchor` resolves once the object is stored.
   */
  async readAnchor(): Promise<Uint8Array | null> {
    this.#assertOpen();
    try {
      return await this.#anchor.read();
    } catch (err) {
      throw toPlatformError(err, 'readAnchor');
    }
  }

  async writeAnchor(value: Uint8Array): Promise<void> {
    const v = Buffer.from(view(value, 'value')); // a copy: the caller may reuse its buffer
    if (v.length > ANCHOR_MAX_BYTES) throw new PlatformError(`anchor: ${v.length} bytes, at most ${ANCHOR_MAX_BYTES}`, 'bad-argument');
    this.#assertOpen();
    try {
      await this.#anchor.write(v);
    } catch (err) {
      throw toPlatformError(err, 'writeAnchor');
    }
  }

  async publicKey(keyLabel: string): Promise<Uint8Array> {
    checkLabel(keyLabel);
    const cached = this.#publicKeys.get(keyLabel);
    if (cached !== undefined) {
      this.#assertOpen();
      return Uint8Array.from(cached);
    }
    const point = await this.#op('publicKey', keyLabel, 'ecdh-public', (s, key) =>
      ecPointToRaw(readAttribute(this.#p, s, key, pkcs11js.CKA_EC_POINT)),
    );
    this.#publicKeys.set(keyLabel, point);
    return Uint8Array.from(point);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#random.clear();
    await this.#anchor.close(); // before the token: the thread's session uses its login
    await this.#token.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new PlatformError('pkcs11: the platform is closed', 'hsm-failure');
  }

  /**
   * Runs one operation on a pooled session with the key `label` of `kind`. Errors
   * become PlatformErrors; a key handle the token no longer knows is forgotten so the
   * next call looks the label up again.
   */
  async #op<T>(what: string, label: string, kind: KeyKind, fn: (s: Handle, key: Handle) => T | Promise<T>): Promise<T> {
    this.#assertOpen();
    const cacheKey = `${kind}\u0000${label}`;
    try {
      return await this.#token.pool.use(async (s) => {
        let key = this.#handles.get(cacheKey);
        if (key === undefined) {
          key = findKey(this.#p, s, kind, label);
          if (kind === 'seal' || kind === 'ecdh-private') key = this.#sessionCopy(key);
          this.#handles.set(cacheKey, key);
        }
        return await fn(s, key);
      });
    } catch (err) {
      if (isKeyHandleError(err)) this.#handles.delete(cacheKey);
      throw toPlatformError(err, what);
    }
  }

  /**
   * A seal or ECDH private key's session copy (keys.ts `SESSION_COPY_TEMPLATE`), made once
   * per label on the token's object session: every later C_EncryptInit/C_DecryptInit/
   * C_DeriveKey uses it, so SoftHSM2's file backend does not re-check the token object per
   * call (docs/pkcs11.md: 3 KiB seal 21 → 11 µs, DH 104 → 75 µs on a quiet token). A key
   * the token will not copy that way (CKA_MODIFIABLE false: every key provisioned before
   * session 18) is used in place, as before; so is any key whose copy fails for another
   * reason. Same key either way.
   */
  #sessionCopy(tokenKey: Handle): Handle {
    try {
      return this.#p.C_CopyObject(this.#token.objectSession(), tokenKey, SESSION_COPY_TEMPLATE);
    } catch {
      return tokenKey;
    }
  }

  async #encrypt(s: Handle, key: Handle, nonce: Buffer, aad: Buffer, pt: Buffer, out: Buffer): Promise<Buffer> {
    this.#p.C_EncryptInit(s, gcm(nonce, aad), key);
    // pkcs11js turns an empty input buffer into CKR_ARGUMENTS_BAD; C_EncryptFinal alone
    // seals the empty message (it outputs just the tag).
    return pt.length === 0 ? this.#calls.encryptFinal(s, out) : this.#calls.encrypt(s, pt, out);
  }

  /**
   * After a C_Decrypt failure that looks like a bad tag: seal and unseal a random
   * message with the same key on the same session. If that works, the token is healthy
   * and the failure was the input's. If not, the token is failing: PlatformError.
   */
  async #probe(s: Handle, key: Handle, original: unknown): Promise<void> {
    try {
      const msg = nodeRandomBytes(16);
      const nonce = nodeRandomBytes(NONCE_BYTES);
      const aad = Buffer.from('coffer/pkcs11/probe');
      const ct = await this.#encrypt(s, key, nonce, aad, msg, Buffer.alloc(msg.length + TAG_BYTES));
      this.#p.C_DecryptInit(s, gcm(nonce, aad), key);
      const back = await this.#calls.decrypt(s, Buffer.from(ct), Buffer.alloc(ct.length));
      if (back.equals(msg)) return;
    } catch {
      // fall through: the token cannot open what it just sealed
    }
    throw toPlatformError(original, 'C_Decrypt (the token failed a self-check afterwards)');
  }
}

/** P-256's field prime and curve coefficient b (SEC 2 §2.4.2; a = −3). */
const P256_P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const P256_B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

/**
 * SEC1 §2.3.4 uncompressed point on P-256: 65 bytes, 0x04 prefix, coordinates below p and
 * y² = x³ − 3x + b (mod p) (SEC1 §3.2.2.1; the cofactor is 1, and the identity has no
 * uncompressed form). Checked here because a token need not check the points it is given
 * (an invalid-curve point would leak the key). In BigInt arithmetic (~2 µs; node's
 * ECDH.convertKey took ~15 µs per request): the point is the client's public ephemeral key,
 * so the check need not be constant-time.
 */
function checkP256Point(point: Buffer): void {
  if (point.length !== P256_POINT_BYTES || point[0] !== 0x04) {
    throw new PlatformError(`ecdh: peer public key must be a 65-byte uncompressed P-256 point, got ${point.length} bytes`, 'bad-argument');
  }
  const x = BigInt(`0x${point.toString('hex', 1, 33)}`);
  const y = BigInt(`0x${point.toString('hex', 33, 65)}`);
  if (x >= P256_P || y >= P256_P || (y * y - (((x * x) % P256_P) * x - 3n * x + P256_B)) % P256_P !== 0n) {
    throw new PlatformError('ecdh: peer public key is not a point on P-256', 'bad-argument');
  }
}
