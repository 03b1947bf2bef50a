/**
 * The vault core's only window on the outside world (Juicebox's `Platform` shape).
 *
 * The core is a pure state machine over bytes; whatever needs a clock, randomness or
 * the HSM's keys comes through this interface. Implementations live in
 * `src/platform/` (software, pkcs11) and never inside `src/core/`.
 *
 * Key handles are referred to by *label* (a short ASCII string such as
 * `coffer-record-seal-v1`), which is how a PKCS#11 token finds them too.
 *
 * All byte values are `Uint8Array`; implementations must not retain the buffers they
 * are given.
 */
export interface Platform {
  /** A human-readable name for logs and metrics, e.g. `software` or `pkcs11:SoftHSM`. */
  readonly name: string;

  /** Milliseconds since the Unix epoch. */
  now(): number;

  /** `length` cryptographically secure random bytes. */
  randomBytes(length: number): Uint8Array;

  /**
   * AES-256-GCM under the HSM-resident secret key `keyLabel`, with a fresh random
   * 96-bit nonce. Returns `nonce (12) || ciphertext || tag (16)`.
   * `headroom` (optional, default 0): that many zero bytes come first, before the nonce,
   * so a caller that prepends a header writes it in place instead of copying the result
   * (`sealRecord`'s format byte). A platform may ignore it; callers tell by the length.
   * @throws PlatformError if the key does not exist or the HSM fails.
   */
  seal(keyLabel: string, aad: Uint8Array, plaintext: Uint8Array, headroom?: number): Promise<Uint8Array>;

  /**
   * Opens what `seal` produced. Returns `null` when authentication fails (wrong key,
   * wrong AAD, altered bytes, too short): callers treat every such case alike.
   * @throws PlatformError only for HSM failures, never for bad input.
   */
  unseal(keyLabel: string, aad: Uint8Array, sealed: Uint8Array): Promise<Uint8Array | null>;

  /**
   * HMAC-SHA256 under the HSM-resident secret key `keyLabel`.
   */
  mac(keyLabel: string, data: Uint8Array): Promise<Uint8Array>;

  /**
   * ECDH on P-256 between the HSM-resident private key `keyLabel` and `peerPublicKey`
   * (SEC1 uncompressed, 65 bytes). Returns the 32-byte shared x-coordinate (the `DH()`
   * output of RFC 9180 §7.1.1). Rejects points not on the curve with PlatformError
   * `bad-argument`, the only code the core reads as the sender's fault (`undecryptable`);
   * any other code is a platform failure (HTTP 503 `platform-failure`, retried elsewhere).
   */
  ecdh(keyLabel: string, peerPublicKey: Uint8Array): Promise<Uint8Array>;

  /** The SEC1 uncompressed public key (65 bytes) of the P-256 key pair `keyLabel`. */
  publicKey(keyLabel: string): Promise<Uint8Array>;

  /**
   * The node's trusted anchor (spec/vault-protocol.md §13, rollback protection): a small
   * value (≤ ANCHOR_MAX_BYTES) that only the core reads and writes, kept inside the
   * platform's trust boundary — on PKCS#11 a private, non-modifiable-by-others token
   * object (two CKO_DATA slots, application `coffer-anchor-v2`); on the software platform a file written
   * with fsync, which is NOT tamper-resistant. `null` before the first write.
   * @throws PlatformError for HSM/storage failures
   */
  readAnchor(): Promise<Uint8Array | null>;

  /**
   * Replaces the anchor; resolves only once it is durable. Refuses, writing nothing, with
   * PlatformError `anchor-moved` when the stored anchor is no longer the value this
   * platform instance last read or wrote: another process writes the same anchor (a second
   * vault on the same token or key folder, serving its own copy of the store), and a write
   * here would put this process's chain over the other's (the second vault's guesses
   * counted from the copy's older state). A write after a failed one accepts either value.
   * @throws PlatformError
   */
  writeAnchor(value: Uint8Array): Promise<void>;
}

/** The largest anchor a platform must hold. */
export const ANCHOR_MAX_BYTES = 256;
/**
 * Anchor values a platform accepts as "its own" after writes that failed midway (any of
 * them may be on the token): the newest this many. Beyond them a write refuses
 * (`anchor-moved`) and the vault stops answering until it resumes: safe, if unavailable.
 */
export const ANCHOR_VALUES_REMEMBERED = 8;

/** An HSM or key-store failure (missing key, wrong PIN, token gone). Never bad input. */
export class PlatformError extends Error {
  override readonly name = 'PlatformError';
  constructor(
    message: string,
    readonly code: 'key-missing' | 'login-failed' | 'token-missing' | 'hsm-failure' | 'bad-argument' | 'anchor-moved',
  ) {
    super(message);
  }
}

/** `Platform.seal`'s headroom: a small non-negative integer. */
export function checkHeadroom(headroom: number): number {
  if (!Number.isInteger(headroom) || headroom < 0 || headroom > 64) throw new PlatformError(`seal: headroom must be an integer 0..64, not ${headroom}`, 'bad-argument');
  return headroom;
}
