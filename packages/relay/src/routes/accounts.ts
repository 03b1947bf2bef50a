/** Built-in accounts (device keys, account passwords) and sessions (spec/relay-api.md §1). */
import { createHash } from 'node:crypto';
import { POW_LABEL, leadingZeroBits } from '@coffer/protocol';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { decodeB64u, ed25519PublicKey, type AccountStore } from '../auth/account-store.js';
import { LOCAL_PREFIX, type Authenticator } from '../auth/authenticate.js';
import { accountPasswordProblem, hashPassword, scryptKdf, verifyPassword, type PasswordKdf } from '../auth/password.js';
import { RelayError } from '../errors.js';
import type { BucketRule, TokenBuckets } from '../rate-limit.js';

const ACCOUNT_ID = /^[a-z0-9]{26}$/;
export { POW_LABEL };

export interface PowRule {
  /** Leading zero bits asked of the first attempt beyond the per-account limit. */
  readonly baseBits: number;
  /** The most ever asked (the cost to the owner, after an attack, is bounded by it). */
  readonly maxBits: number;
}

export const DEFAULT_POW: PowRule = { baseBits: 16, maxBits: 24 };

export interface SignInRules {
  /** Failed device-key proofs (against a live challenge of the account) per (account, address). */
  readonly keyFailuresByAccountAddress: BucketRule;
  /** Failed account passwords per (account, address): the attacker's own address runs dry. */
  readonly passwordFailuresByAccountAddress: BucketRule;
  /** Failed account passwords per account from all addresses; beyond it, a proof-of-work whose cost grows. */
  readonly passwordFailuresByAccount: BucketRule;
  readonly pow: PowRule;
}

export interface AccountRoutesOptions {
  readonly accounts: AccountStore | null;
  readonly authenticate: Authenticator;
  readonly accountCreation: TokenBuckets;
  /** Every sign-in attempt per address. */
  readonly signInByAddress: TokenBuckets;
  readonly rules: SignInRules;
  /** The client's key for the limits (IPv4 address or IPv6 /64). */
  readonly addressOf: (req: FastifyRequest) => string;
  /** The account-password KDF (default scrypt; tests count calls through it). */
  readonly passwordKdf?: PasswordKdf;
}

function limit(buckets: TokenBuckets, key: string): void {
  const wait = buckets.take(key);
  if (wait > 0) throw new RelayError('rate-limited', { retryAfter: wait });
}

function object(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new RelayError('bad-request', { message: 'expected a JSON object' });
  return body as Record<string, unknown>;
}

/** The optional/required `password` field: a string the relay's length rule accepts. */
function password(body: Record<string, unknown>): string {
  const problem = accountPasswordProblem(body.password);
  if (problem) throw new RelayError(typeof body.password === 'string' ? 'weak-password' : 'bad-request', { message: problem });
  return body.password as string;
}

function publicKey(value: unknown, field = 'publicKey'): Buffer {
  const raw = decodeB64u(value, 32);
  if (!raw || !ed25519PublicKey(raw)) throw new RelayError('bad-request', { message: `${field}: expected a base64url raw 32-byte Ed25519 public key` });
  return raw;
}

/** SHA-256(label || 0x00 || challenge || nonce): the work a proof-of-work asks for. */
export function powDigest(challenge: Uint8Array, nonce: Uint8Array): Buffer {
  return createHash('sha256').update(POW_LABEL).update(Buffer.from([0])).update(challenge).update(nonce).digest();
}

export function powSolves(challenge: Uint8Array, nonce: Uint8Array, bits: number): boolean {
  return leadingZeroBits(powDigest(challenge, nonce)) >= bits;
}

export async function accountRoutes(app: FastifyInstance, o: AccountRoutesOptions): Promise<void> {
  const kdf = o.passwordKdf ?? scryptKdf;
  const { rules } = o;
  const store = (): AccountStore => {
    if (!o.accounts) throw new RelayError('accounts-disabled');
    return o.accounts;
  };
  const accountId = (body: Record<string, unknown>): string => {
    if (typeof body.account !== 'string' || !ACCOUNT_ID.test(body.account)) throw new RelayError('bad-request', { message: 'account: expected a 26-character account ID' });
    return body.account;
  };

  /**
   * A device-key proof (sign-in, or a credential change). Only a wrong signature over a
   * live challenge issued for this account counts as a failure, and only against the
   * (account, address) pair: made-up or used challenges say nothing about the account's
   * keys, and an Ed25519 signature cannot be guessed, so strangers can never spend a
   * budget the owner needs. The per-address sign-in bucket bounds the work.
   */
  const proveKey = async (req: FastifyRequest, id: string, body: Record<string, unknown>): Promise<Buffer | null> => {
    const accounts = store();
    limit(o.signInByAddress, o.addressOf(req));
    const challenge = decodeB64u(body.challenge, 32);
    const signature = decodeB64u(body.signature, 64);
    if (!challenge || !signature) return null;
    const pair = `${id} ${o.addressOf(req)}`;
    const t = await accounts.take('key-failures', pair, rules.keyFailuresByAccountAddress);
    if (t.wait > 0) throw new RelayError('rate-limited', { retryAfter: t.wait });
    const proof = await accounts.proveKey(id, challenge, signature).catch(async (err: unknown) => {
      await accounts.refund('key-failures', pair, rules.keyFailuresByAccountAddress);
      throw err;
    });
    if (proof.result !== 'bad-signature') await accounts.refund('key-failures', pair, rules.keyFailuresByAccountAddress);
    return proof.result === 'ok' ? proof.key : null;
  };

  /**
   * An account-password check. Failures count per (account, address) — a stranger's own
   * address runs dry, 429 — and per account from every address. Beyond the per-account
   * limit the right password is not refused: the attempt must carry a proof-of-work
   * (`pow`), whose difficulty grows with how far beyond the limit the account is being
   * tried (log2 of the debt), up to `pow.maxBits`. Without one: 428
   * proof-of-work-required with the puzzle.
   */
  const provePassword = async (req: FastifyRequest, id: string, given: string, body: Record<string, unknown>): Promise<boolean> => {
    const accounts = store();
    limit(o.signInByAddress, o.addressOf(req));
    const pair = `${id} ${o.addressOf(req)}`;
    const t1 = await accounts.take('password-failures', pair, rules.passwordFailuresByAccountAddress);
    if (t1.wait > 0) throw new RelayError('rate-limited', { retryAfter: t1.wait });
    let refunds: (() => Promise<void>)[] = [() => accounts.refund('password-failures', pair, rules.passwordFailuresByAccountAddress)];
    const refundAll = async (): Promise<void> => {
      for (const r of refunds) await r();
      refunds = [];
    };
    try {
      const t2 = await accounts.take('password-failures', id, rules.passwordFailuresByAccount);
      if (t2.wait > 0) {
        // One bit more per doubling of the debt beyond the limit: the base while at most one
        // attempt is owed (exactly one — an empty bucket, two attempts in the same
        // millisecond — is still the base: it was one bit more by chance of the clock).
        const debt = Math.max(0, 1 - t2.tokens);
        const bits = Math.min(rules.pow.maxBits, rules.pow.baseBits + Math.max(0, Math.ceil(Math.log2(1 + debt)) - 1));
        const pow = body.pow as { challenge?: unknown; nonce?: unknown; bits?: unknown } | undefined;
        const ch = pow && typeof pow === 'object' ? decodeB64u(pow.challenge, 32) : null;
        const nonce = pow && typeof pow === 'object' && typeof pow.nonce === 'string' && /^[A-Za-z0-9_-]{1,86}$/.test(pow.nonce) ? Buffer.from(pow.nonce, 'base64url') : null;
        const claimed = pow && typeof pow === 'object' && Number.isInteger(pow.bits) ? (pow.bits as number) : -1;
        // The puzzle's difficulty is bound to it by the account field of its challenge row,
        // and must be what the account asks now: puzzles collected early, while the debt
        // was small, would otherwise buy guesses at the base price however hard it is tried.
        const solved = ch !== null && nonce !== null && claimed >= bits && claimed <= 32 && powSolves(ch, nonce, claimed) && (await accounts.takeChallenge(`pow:${claimed}:${id}`, ch));
        if (!solved) {
          const { challenge } = await accounts.challenge(`pow:${bits}:${id}`);
          await refundAll();
          throw new RelayError('proof-of-work-required', { pow: { challenge: Buffer.from(challenge).toString('base64url'), bits } });
        }
        // Paid for: the attempt goes ahead and deepens the debt (the next puzzle is harder).
        await accounts.take('password-failures', id, rules.passwordFailuresByAccount, true);
      }
      refunds.push(() => accounts.refund('password-failures', id, rules.passwordFailuresByAccount));
      const ok = await verifyPassword(given, await accounts.passwordHash(id), kdf);
      if (ok) await refundAll();
      refunds = [];
      return ok;
    } finally {
      await refundAll();
    }
  };

  app.post('/v1/accounts', async (req, reply) => {
    const accounts = store();
    limit(o.accountCreation, o.addressOf(req));
    const body = object(req.body);
    const key = publicKey(body.publicKey);
    const hash = body.password !== undefined ? await hashPassword(password(body), kdf) : undefined;
    const id = await accounts.createAccount(key, hash);
    if (!id) throw new RelayError('key-exists');
    req.log.info({ account: LOCAL_PREFIX + id, accountPassword: hash !== undefined }, 'account created');
    return reply.code(201).send({ account: id });
  });

  app.post('/v1/sessions/challenge', async (req) => {
    const accounts = store();
    const account = accountId(object(req.body));
    // Per address only: a per-account limit here could be spent by anyone who knows the ID.
    limit(o.signInByAddress, o.addressOf(req));
    const { challenge, expiresAt } = await accounts.challenge(account);
    return { challenge: Buffer.from(challenge).toString('base64url'), expiresAt };
  });

  app.post('/v1/sessions', async (req) => {
    const accounts = store();
    const body = object(req.body);
    const account = accountId(body);
    const key = await proveKey(req, account, body);
    if (!key) {
      req.log.info({ account: LOCAL_PREFIX + account }, 'sign-in refused');
      throw new RelayError('invalid-credentials');
    }
    req.log.info({ account: LOCAL_PREFIX + account }, 'signed in');
    return accounts.openSession(account, { key });
  });

  // Account password sign-in: the same 401 for an unknown account, an account without a
  // password and a wrong password, after the same scrypt work (auth/password.ts).
  app.post('/v1/sessions/password', async (req) => {
    const accounts = store();
    const body = object(req.body);
    const account = accountId(body);
    if (typeof body.password !== 'string' || body.password.length > 4096) throw new RelayError('bad-request', { message: 'password: expected a string' });
    if (!(await provePassword(req, account, body.password, body))) {
      req.log.info({ account: LOCAL_PREFIX + account }, 'password sign-in refused');
      throw new RelayError('invalid-credentials');
    }
    req.log.info({ account: LOCAL_PREFIX + account }, 'signed in with the account password');
    return accounts.openSession(account, { password: true });
  });

  /** Sign-out: ends the session of this bearer token. */
  app.delete('/v1/sessions/current', { preHandler: o.authenticate }, async (req, reply) => {
    const id = localId(req);
    await store().revokeSession(bearerToken(req));
    req.log.info({ account: LOCAL_PREFIX + id }, 'signed out');
    return reply.code(204).send();
  });

  /** Ends every other session of the account (no proof needed: it only takes access away). */
  app.delete('/v1/sessions', { preHandler: o.authenticate }, async (req) => {
    const id = localId(req);
    const revoked = await store().revokeOtherSessions(id, bearerToken(req));
    req.log.info({ account: LOCAL_PREFIX + id, revokedSessions: revoked }, 'other sessions ended');
    return { revoked };
  });

  /**
   * A bearer session is not enough to change the account's long-term credentials (a
   * stolen token would become a permanent takeover): the request must also carry the
   * current account password (`currentPassword`, when one is set) or a signature by one
   * of the account's device keys over a fresh challenge (`challenge`, `signature`, as in
   * POST /v1/sessions). Wrong proof: 401 invalid-credentials; none: 403 proof-required.
   * @returns the device key that proved, or null for the password
   */
  const requireProof = async (req: FastifyRequest, id: string, body: Record<string, unknown>): Promise<Buffer | null> => {
    if (body.currentPassword !== undefined) {
      if (typeof body.currentPassword !== 'string' || body.currentPassword.length > 4096) throw new RelayError('bad-request', { message: 'currentPassword: expected a string' });
      if (await provePassword(req, id, body.currentPassword, body)) return null;
      req.log.info({ account: req.account }, 'account change refused: wrong current password');
      throw new RelayError('invalid-credentials', { message: 'the current account password is wrong' });
    }
    if (body.challenge !== undefined || body.signature !== undefined) {
      const key = await proveKey(req, id, body);
      if (key) return key;
      req.log.info({ account: req.account }, 'account change refused: bad device-key proof');
      throw new RelayError('invalid-credentials', { message: 'the device-key proof is wrong or its challenge was used or expired' });
    }
    throw new RelayError('proof-required');
  };

  const localId = (req: FastifyRequest, what = 'built-in accounts'): string => {
    store();
    if (!req.account.startsWith(LOCAL_PREFIX)) throw new RelayError('accounts-disabled', { message: `${what} belong to built-in accounts; this token is an app token` });
    return req.account.slice(LOCAL_PREFIX.length);
  };

  app.put('/v1/accounts/password', { preHandler: o.authenticate }, async (req, reply) => {
    const accounts = store();
    const id = localId(req, 'account passwords');
    const body = object(req.body);
    const next = password(body);
    if (body.revokeOtherDevices !== undefined && typeof body.revokeOtherDevices !== 'boolean') throw new RelayError('bad-request', { message: 'revokeOtherDevices: expected true or false' });
    const proofKey = await requireProof(req, id, body);
    const hash = await hashPassword(next, kdf);
    await accounts.setPasswordHash(id, hash);
    const token = bearerToken(req);
    // Whoever held another session (a stolen token) loses it with the old password.
    const revoked = await accounts.revokeOtherSessions(id, token);
    // And with revokeOtherDevices, whoever registered a device key with it (a phished
    // password): every key goes but this device's (the one that proved, or opened this session).
    let revokedKeys = 0;
    if (body.revokeOtherDevices === true) revokedKeys = await accounts.removeOtherKeys(id, proofKey ?? (await accounts.sessionKey(token)));
    req.log.info({ account: req.account, revokedSessions: revoked, revokedKeys }, 'account password set');
    return reply.code(204).send();
  });

  app.get('/v1/accounts/keys', { preHandler: o.authenticate }, async (req) => {
    const accounts = store();
    const id = localId(req, 'device keys');
    const current = await accounts.sessionKey(bearerToken(req));
    return { keys: await accounts.listKeys(id), current: current ? current.toString('base64url') : null };
  });

  app.post('/v1/accounts/keys', { preHandler: o.authenticate }, async (req, reply) => {
    const accounts = store();
    const id = localId(req, 'device keys');
    const body = object(req.body);
    const key = publicKey(body.publicKey);
    await requireProof(req, id, body);
    if (!(await accounts.addKey(id, key))) throw new RelayError('key-exists');
    req.log.info({ account: req.account }, 'device key added');
    return reply.code(201).send({});
  });

  /**
   * Removes a device key (proved like every credential change) and ends the sessions it
   * opened. The last key may go too: the account password (if set) still signs in.
   */
  app.delete('/v1/accounts/keys/:publicKey', { preHandler: o.authenticate }, async (req, reply) => {
    const accounts = store();
    const id = localId(req, 'device keys');
    const key = publicKey((req.params as { publicKey: string }).publicKey, 'the key in the path');
    const body = req.body === undefined ? {} : object(req.body);
    await requireProof(req, id, body);
    if (!(await accounts.removeKey(id, key))) throw new RelayError('key-not-found');
    req.log.info({ account: req.account }, 'device key removed');
    return reply.code(204).send();
  });
}

/** The bearer token of an authenticated request (the authenticator checked its shape). */
function bearerToken(req: FastifyRequest): string {
  return /^Bearer (\S+)$/i.exec(String(req.headers.authorization ?? '').trim())?.[1] ?? '';
}
