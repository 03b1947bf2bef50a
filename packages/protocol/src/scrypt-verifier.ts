/**
 * The scrypt password-verifier string shared by the relay (account passwords it
 * stores) and the client (its local check that a backup password is not the account
 * password): `scrypt$<N>$<r>$<p>$<salt b64url>$<hash b64url>`. Format and parse only —
 * the KDF itself runs where it is used (node:crypto's scrypt off the event loop), so
 * this stays isomorphic.
 */
import { fromBase64Url, toBase64Url } from './bytes.js';

export interface ScryptVerifier {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Uint8Array;
  readonly hash: Uint8Array;
}

/** The parameters new verifiers use (N = 2^15, r = 8, p = 1; 16-byte salt, 32-byte hash). */
export const SCRYPT_VERIFIER_PARAMS = { N: 1 << 15, r: 8, p: 1, saltBytes: 16, hashBytes: 32 } as const;

const PATTERN = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/;

export function formatScryptVerifier(v: ScryptVerifier): string {
  return `scrypt$${v.N}$${v.r}$${v.p}$${toBase64Url(v.salt)}$${toBase64Url(v.hash)}`;
}

/**
 * The parts of a verifier string, or null when it is malformed or its parameters are
 * out of bounds (N a power of two in 2..2^20, r 1..32, p 1..16, hash at least 16 bytes).
 */
export function parseScryptVerifier(text: string): ScryptVerifier | null {
  const m = PATTERN.exec(text);
  if (!m) return null;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (N < 2 || N > 1 << 20 || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return null;
  let salt: Uint8Array;
  let hash: Uint8Array;
  try {
    salt = fromBase64Url(m[4]!, 'salt');
    hash = fromBase64Url(m[5]!, 'hash');
  } catch {
    return null;
  }
  if (hash.length < 16) return null;
  return { N, r, p, salt, hash };
}

/** scrypt's memory bound for these parameters (node:crypto's `maxmem`), with headroom. */
export function scryptMaxmem(N: number, r: number): number {
  return 256 * N * r + (1 << 20);
}
