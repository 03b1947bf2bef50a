/**
 * Client-side wrapping of the backup key K under the OPAQUE export key (RFC 9807 §6.4
 * "export_key": a client-only secret the server never sees). The vault stores only the
 * result, so even the vault never holds K in the clear (spec §6).
 *
 *   wrapKey = HKDF-SHA256(ikm = export_key, salt = "", info = label || 0x00 || account, 32)
 *   wrapped = nonce(12) || AES-256-GCM(wrapKey, nonce, aad = label || 0x00 || account, K)
 */
import { ByteWriter, concat, utf8 } from './bytes.js';
import { DecryptionError } from './errors.js';
import { LABELS } from './labels.js';
import { aesGcmOpen, aesGcmSeal, aesGcmSealNow, hkdf, webRandom, type RandomSource } from './primitives.js';

export const BACKUP_KEY_LENGTH = 32;
export const WRAPPED_BACKUP_KEY_LENGTH = 12 + BACKUP_KEY_LENGTH + 16;

const EMPTY = new Uint8Array(0);

function context(label: string, account: string): Uint8Array {
  return new ByteWriter().bytes(utf8(label)).u8(0).bytes(utf8(account)).finish();
}

export async function wrapBackupKey(exportKey: Uint8Array, account: string, backupKey: Uint8Array, rng: RandomSource = webRandom): Promise<Uint8Array> {
  if (backupKey.length !== BACKUP_KEY_LENGTH) throw new RangeError(`backupKey: expected ${BACKUP_KEY_LENGTH} bytes`);
  const ctx = context(LABELS.backupKeyWrap, account);
  const key = await hkdf(exportKey, new Uint8Array(0), ctx, 32);
  const nonce = rng(12);
  return concat(nonce, await aesGcmSeal(key, nonce, ctx, backupKey));
}

/** @throws DecryptionError */
export async function unwrapBackupKey(exportKey: Uint8Array, account: string, wrapped: Uint8Array): Promise<Uint8Array> {
  if (wrapped.length !== WRAPPED_BACKUP_KEY_LENGTH) throw new DecryptionError();
  const ctx = context(LABELS.backupKeyWrap, account);
  const key = await hkdf(exportKey, new Uint8Array(0), ctx, 32);
  return aesGcmOpen(key, wrapped.subarray(0, 12), ctx, wrapped.subarray(12));
}

export const OWNER_TOKEN_LENGTH = 32;

/**
 * The token that proves, to the vault, that a delete request comes from someone who holds
 * K (spec §5.5). The vault stores only SHA-256 of it (sent inside the HPKE envelope, so
 * the front end sees neither):
 *
 *   token = HKDF-SHA256(ikm = K, salt = "", info = "coffer/vault/v1/owner-token" || 0x00 || account, 32)
 */
export async function ownerToken(backupKey: Uint8Array, account: string): Promise<Uint8Array> {
  if (backupKey.length !== BACKUP_KEY_LENGTH) throw new RangeError(`backupKey: expected ${BACKUP_KEY_LENGTH} bytes`);
  return hkdf(backupKey, new Uint8Array(0), context(LABELS.vaultOwnerToken, account), OWNER_TOKEN_LENGTH);
}

/**
 * The vault → client release of the wrapped key after a successful login, under a key
 * from the OPAQUE session key (RFC 9807 §6.4.2), so only the party that finished the
 * AKE can read it, on top of the HPKE response encryption.
 */
export async function releaseKey(sessionKey: Uint8Array, account: string): Promise<Uint8Array> {
  return hkdf(sessionKey, new Uint8Array(0), context(LABELS.loginRelease, account), 32);
}

export async function sealRelease(sessionKey: Uint8Array, account: string, wrappedKey: Uint8Array, nonce: Uint8Array): Promise<Uint8Array> {
  const ctx = context(LABELS.loginRelease, account);
  const key = await hkdf(sessionKey, EMPTY, ctx, 32);
  try {
    let sealed = aesGcmSealNow(key, nonce, ctx, wrappedKey);
    if (sealed instanceof Promise) sealed = await sealed;
    return concat(nonce, sealed);
  } finally {
    key.fill(0);
  }
}

/** @throws DecryptionError */
export async function openRelease(sessionKey: Uint8Array, account: string, released: Uint8Array): Promise<Uint8Array> {
  if (released.length < 12 + 16) throw new DecryptionError();
  const key = await releaseKey(sessionKey, account);
  return aesGcmOpen(key, released.subarray(0, 12), context(LABELS.loginRelease, account), released.subarray(12));
}
