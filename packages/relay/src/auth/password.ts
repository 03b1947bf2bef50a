/**
 * Account passwords of built-in accounts (spec/relay-api.md §1): stored as scrypt
 * (N=2^15, r=8, p=1, 16-byte random salt, 32-byte output) with the parameters in the
 * stored string, `scrypt$<N>$<r>$<p>$<salt b64url>$<hash b64url>`, compared in constant
 * time. Unknown accounts and accounts without a password are checked against a dummy
 * record, so the work (and the time) is the same whether or not the account exists.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { formatScryptVerifier, parseScryptVerifier, scryptMaxmem, SCRYPT_VERIFIER_PARAMS } from '@coffer/protocol';

export const SCRYPT_PARAMS = { N: SCRYPT_VERIFIER_PARAMS.N, r: SCRYPT_VERIFIER_PARAMS.r, p: SCRYPT_VERIFIER_PARAMS.p } as const;
export const SALT_BYTES = SCRYPT_VERIFIER_PARAMS.saltBytes;
export const HASH_BYTES = SCRYPT_VERIFIER_PARAMS.hashBytes;
/** Server-side rule (the client's rules are stricter): at least 10, at most 1024 code points. */
export const MIN_ACCOUNT_PASSWORD_LENGTH = 10;
export const MAX_ACCOUNT_PASSWORD_LENGTH = 1024;

/** The key-derivation step (scrypt); injectable so tests can count calls instead of timing them. */
export type PasswordKdf = (password: string, salt: Buffer, keylen: number, o: ScryptOptions) => Promise<Buffer>;

/**
 * At most `lanes` derivations run at once; the others wait their turn (first come, first
 * served). scrypt runs on libuv's thread pool (4 threads), which the blob store's file
 * I/O also uses: sign-ins with random account names from many addresses (each a full
 * scrypt, ~32 MiB, for an unknown account too) would otherwise take every pool thread,
 * and uploads and downloads stalled behind them. Waiting sign-ins end with the request
 * timeout like any slow request.
 */
export function gatedKdf(kdf: PasswordKdf, lanes: number): PasswordKdf {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async (password, salt, keylen, o) => {
    while (running >= lanes) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await kdf(password, salt, keylen, o);
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

/** Pool threads password derivations may hold at once (of libuv's 4): the rest stay for I/O. */
export const KDF_LANES = 2;

export const scryptKdf: PasswordKdf = gatedKdf(
  (password, salt, keylen, o) => new Promise((resolve, reject) => scrypt(password.normalize('NFC'), salt, keylen, o, (err, key) => (err ? reject(err) : resolve(key)))),
  KDF_LANES,
);

function options(N: number, r: number, p: number): ScryptOptions {
  return { N, r, p, maxmem: scryptMaxmem(N, r) };
}

/** Why `password` is refused by the relay, or null. */
export function accountPasswordProblem(password: unknown): string | null {
  if (typeof password !== 'string') return 'password: expected a string';
  const n = [...password].length;
  if (n < MIN_ACCOUNT_PASSWORD_LENGTH) return `password: use at least ${MIN_ACCOUNT_PASSWORD_LENGTH} characters`;
  if (n > MAX_ACCOUNT_PASSWORD_LENGTH) return `password: use at most ${MAX_ACCOUNT_PASSWORD_LENGTH} characters`;
  return null;
}

export async function hashPassword(password: string, kdf: PasswordKdf = scryptKdf): Promise<string> {
  const { N, r, p } = SCRYPT_PARAMS;
  const salt = randomBytes(SALT_BYTES);
  const hash = await kdf(password, salt, HASH_BYTES, options(N, r, p));
  return formatScryptVerifier({ N, r, p, salt, hash });
}

let dummy: Promise<string> | undefined;

/**
 * Computes the dummy record now (at start-up), so the first probe for an unknown
 * account costs one scrypt like every other, not two.
 */
export function prepareDummyPasswordHash(): Promise<string> {
  dummy ??= hashPassword(randomBytes(16).toString('hex'));
  return dummy;
}

/**
 * Whether `password` matches `stored`. With `stored` null (unknown account, or no
 * password set) the same scrypt runs against a dummy record and the answer is false.
 */
export async function verifyPassword(password: string, stored: string | null, kdf: PasswordKdf = scryptKdf): Promise<boolean> {
  const v = stored ? parseScryptVerifier(stored) : null;
  if (!v) {
    await verifyPassword(password, await prepareDummyPasswordHash(), kdf);
    return false;
  }
  const { N, r, p } = v;
  const salt = Buffer.from(v.salt);
  const want = Buffer.from(v.hash);
  const got = await kdf(password, salt, want.length, options(N, r, p));
  return timingSafeEqual(got, want);
}
