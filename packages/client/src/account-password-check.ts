/**
 * The local check that a vault (backup) password is not the account password. The
 * relay holds a verifier of the account password that its operator could attack
 * offline, while the vault password must stay unknown to the relay in every form; so
 * the comparison happens on the device, against a scrypt verifier of the account
 * password kept in the profile (never sent anywhere). Node only.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { formatScryptVerifier, parseScryptVerifier, scryptMaxmem, SCRYPT_VERIFIER_PARAMS } from '@coffer/protocol';
import { WeakPasswordError } from './errors.js';

function derive(password: string, salt: Uint8Array, n: number, r: number, p: number, keylen: number): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password.normalize('NFC'), salt, keylen, { N: n, r, p, maxmem: scryptMaxmem(n, r) }, (e, k) => (e ? reject(e) : resolve(k))));
}

/** A fresh verifier of the account password for the profile (the relay's format, @coffer/protocol). */
export async function accountPasswordVerifier(password: string): Promise<string> {
  const { N, r, p, saltBytes, hashBytes } = SCRYPT_VERIFIER_PARAMS;
  const salt = randomBytes(saltBytes);
  return formatScryptVerifier({ N, r, p, salt, hash: await derive(password, salt, N, r, p, hashBytes) });
}

/** Whether `password` is the account password `verifier` was made from. */
export async function isAccountPassword(password: string, verifier: string): Promise<boolean> {
  const v = parseScryptVerifier(verifier);
  if (!v) return false;
  return timingSafeEqual(await derive(password, v.salt, v.N, v.r, v.p, v.hash.length), v.hash);
}

export const SAME_AS_ACCOUNT_PASSWORD = 'it must differ from your account password (the relay can check the account password, so it must never learn the backup password)';

/** @throws WeakPasswordError when `password` is the account password. */
export async function checkNotAccountPassword(password: string, verifier: string | undefined): Promise<void> {
  if (verifier !== undefined && (await isAccountPassword(password, verifier))) throw new WeakPasswordError(SAME_AS_ACCOUNT_PASSWORD);
}
