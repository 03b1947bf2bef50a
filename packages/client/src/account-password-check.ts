/**
 * The local check that a vault (backup) password is not the account password. The
 * relay holds a verifier of the account password that its operator could attack
 * offline, while the vault password must stay unknown to the relay in every form; so
 * the comparison happens on the device, against a scrypt verifier of the account
 * password kept in the profile (never sent anywhere). Node only.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { WeakPasswordError } from './errors.js';

const N = 1 << 15;
const R = 8;
const P = 1;

function derive(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password.normalize('NFC'), salt, 32, { N: n, r, p, maxmem: 256 * n * r + (1 << 20) }, (e, k) => (e ? reject(e) : resolve(k))));
}

/** A fresh verifier of the account password for the profile. */
export async function accountPasswordVerifier(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await derive(password, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/** Whether `password` is the account password `verifier` was made from. */
export async function isAccountPassword(password: string, verifier: string): Promise<boolean> {
  const m = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(verifier);
  if (!m) return false;
  const [n, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (n < 2 || n > 1 << 20 || (n & (n - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return false;
  const want = Buffer.from(m[5]!, 'base64url');
  if (want.length !== 32) return false;
  return timingSafeEqual(await derive(password, Buffer.from(m[4]!, 'base64url'), n, r, p), want);
}

export const SAME_AS_ACCOUNT_PASSWORD = 'it must differ from your account password (the relay can check the account password, so it must never learn the backup password)';

/** @throws WeakPasswordError when `password` is the account password. */
export async function checkNotAccountPassword(password: string, verifier: string | undefined): Promise<void> {
  if (verifier !== undefined && (await isAccountPassword(password, verifier))) throw new WeakPasswordError(SAME_AS_ACCOUNT_PASSWORD);
}
