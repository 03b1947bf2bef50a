/** Built-in accounts (device keys, account passwords) and sessions (spec/relay-api.md §1). */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { decodeB64u, ed25519PublicKey, type AccountStore } from '../auth/account-store.js';
import { LOCAL_PREFIX, type Authenticator } from '../auth/authenticate.js';
import { accountPasswordProblem, hashPassword, scryptKdf, verifyPassword, type PasswordKdf } from '../auth/password.js';
import { RelayError } from '../errors.js';
import type { FailureLimit, TokenBuckets } from '../rate-limit.js';

const ACCOUNT_ID = /^[a-z0-9]{26}$/;

export interface AccountRoutesOptions {
  readonly accounts: AccountStore | null;
  readonly authenticate: Authenticator;
  readonly accountCreation: TokenBuckets;
  /** Every sign-in attempt per address. */
  readonly signInByAddress: TokenBuckets;
  /** Failed device-key signatures per (account, address) and per account. */
  readonly signInFailures: FailureLimit;
  /** Failed account passwords per (account, address) and per account (stricter). */
  readonly passwordFailures: FailureLimit;
  /** The account-password KDF (default scrypt; tests count calls through it). */
  readonly passwordKdf?: PasswordKdf;
}

function limit(buckets: TokenBuckets, key: string): void {
  const wait = buckets.take(key);
  if (wait > 0) throw new RelayError('rate-limited', { retryAfter: wait });
}

/** Runs a credential check under a failure limit: true/false, or 429 when limited. */
async function counted(failures: FailureLimit, account: string, address: string, check: () => Promise<boolean> | boolean): Promise<boolean> {
  const r = await failures.attempt(account, address, check);
  if (r > 0) throw new RelayError('rate-limited', { retryAfter: r });
  return r === 0;
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

function publicKey(body: Record<string, unknown>): Buffer {
  const raw = decodeB64u(body.publicKey, 32);
  if (!raw || !ed25519PublicKey(raw)) throw new RelayError('bad-request', { message: 'publicKey: expected a base64url raw 32-byte Ed25519 public key' });
  return raw;
}

export async function accountRoutes(app: FastifyInstance, o: AccountRoutesOptions): Promise<void> {
  const kdf = o.passwordKdf ?? scryptKdf;
  const store = (): AccountStore => {
    if (!o.accounts) throw new RelayError('accounts-disabled');
    return o.accounts;
  };

  app.post('/v1/accounts', async (req, reply) => {
    const accounts = store();
    limit(o.accountCreation, req.ip);
    const body = object(req.body);
    const key = publicKey(body);
    const hash = body.password !== undefined ? await hashPassword(password(body), kdf) : undefined;
    const id = accounts.createAccount(key, hash);
    if (!id) throw new RelayError('key-exists');
    req.log.info({ account: LOCAL_PREFIX + id, accountPassword: hash !== undefined }, 'account created');
    return reply.code(201).send({ account: id });
  });

  app.post('/v1/sessions/challenge', async (req) => {
    const accounts = store();
    const body = object(req.body);
    if (typeof body.account !== 'string' || !ACCOUNT_ID.test(body.account)) throw new RelayError('bad-request', { message: 'account: expected a 26-character account ID' });
    // Per address only: a per-account limit here could be spent by anyone who knows the ID.
    limit(o.signInByAddress, req.ip);
    const { challenge, expiresAt } = accounts.challenge(body.account);
    return { challenge: Buffer.from(challenge).toString('base64url'), expiresAt };
  });

  app.post('/v1/sessions', async (req) => {
    const accounts = store();
    const body = object(req.body);
    if (typeof body.account !== 'string' || !ACCOUNT_ID.test(body.account)) throw new RelayError('bad-request', { message: 'account: expected a 26-character account ID' });
    limit(o.signInByAddress, req.ip);
    const challenge = decodeB64u(body.challenge, 32);
    const signature = decodeB64u(body.signature, 64);
    const account = body.account;
    const ok = await counted(o.signInFailures, account, req.ip, () => challenge !== null && signature !== null && accounts.proveKey(account, challenge, signature));
    const session = ok ? accounts.openSession(account) : null;
    if (!session) {
      req.log.info({ account: LOCAL_PREFIX + body.account }, 'sign-in refused');
      throw new RelayError('invalid-credentials');
    }
    req.log.info({ account: LOCAL_PREFIX + body.account }, 'signed in');
    return session;
  });

  // Account password sign-in: the same 401 for an unknown account, an account without a
  // password and a wrong password, after the same scrypt work (auth/password.ts).
  app.post('/v1/sessions/password', async (req) => {
    const accounts = store();
    const body = object(req.body);
    if (typeof body.account !== 'string' || !ACCOUNT_ID.test(body.account)) throw new RelayError('bad-request', { message: 'account: expected a 26-character account ID' });
    if (typeof body.password !== 'string' || body.password.length > 4096) throw new RelayError('bad-request', { message: 'password: expected a string' });
    limit(o.signInByAddress, req.ip);
    const { account, password: given } = body as { account: string; password: string };
    if (!(await counted(o.passwordFailures, account, req.ip, () => verifyPassword(given, accounts.passwordHash(account), kdf)))) {
      req.log.info({ account: LOCAL_PREFIX + body.account }, 'password sign-in refused');
      throw new RelayError('invalid-credentials');
    }
    req.log.info({ account: LOCAL_PREFIX + body.account }, 'signed in with the account password');
    return accounts.openSession(body.account);
  });

  /**
   * A bearer session is not enough to change the account's long-term credentials (a
   * stolen token would become a permanent takeover): the request must also carry the
   * current account password (`currentPassword`, when one is set) or a signature by one
   * of the account's device keys over a fresh challenge (`challenge`, `signature`, as in
   * POST /v1/sessions). Wrong proof: 401 invalid-credentials; none: 403 proof-required.
   */
  const requireProof = async (req: FastifyRequest, id: string, body: Record<string, unknown>): Promise<void> => {
    const accounts = store();
    if (body.currentPassword !== undefined) {
      if (typeof body.currentPassword !== 'string' || body.currentPassword.length > 4096) throw new RelayError('bad-request', { message: 'currentPassword: expected a string' });
      limit(o.signInByAddress, req.ip);
      const given = body.currentPassword;
      if (await counted(o.passwordFailures, id, req.ip, () => verifyPassword(given, accounts.passwordHash(id), kdf))) return;
      req.log.info({ account: req.account }, 'account change refused: wrong current password');
      throw new RelayError('invalid-credentials', { message: 'the current account password is wrong' });
    }
    if (body.challenge !== undefined || body.signature !== undefined) {
      limit(o.signInByAddress, req.ip);
      const challenge = decodeB64u(body.challenge, 32);
      const signature = decodeB64u(body.signature, 64);
      if (await counted(o.signInFailures, id, req.ip, () => challenge !== null && signature !== null && accounts.proveKey(id, challenge, signature))) return;
      req.log.info({ account: req.account }, 'account change refused: bad device-key proof');
      throw new RelayError('invalid-credentials', { message: 'the device-key proof is wrong or its challenge was used or expired' });
    }
    throw new RelayError('proof-required');
  };

  app.put('/v1/accounts/password', { preHandler: o.authenticate }, async (req, reply) => {
    const accounts = store();
    if (!req.account.startsWith(LOCAL_PREFIX)) throw new RelayError('accounts-disabled', { message: 'account passwords belong to built-in accounts; this token is an app token' });
    const id = req.account.slice(LOCAL_PREFIX.length);
    const body = object(req.body);
    const next = password(body);
    await requireProof(req, id, body);
    const hash = await hashPassword(next, kdf);
    accounts.setPasswordHash(id, hash);
    // Whoever held another session (a stolen token) loses it with the old password.
    const revoked = accounts.revokeOtherSessions(id, bearerToken(req));
    req.log.info({ account: req.account, revokedSessions: revoked }, 'account password set');
    return reply.code(204).send();
  });

  app.post('/v1/accounts/keys', { preHandler: o.authenticate }, async (req, reply) => {
    const accounts = store();
    if (!req.account.startsWith(LOCAL_PREFIX)) throw new RelayError('accounts-disabled', { message: 'device keys belong to built-in accounts; this token is an app token' });
    const id = req.account.slice(LOCAL_PREFIX.length);
    const body = object(req.body);
    const key = publicKey(body);
    await requireProof(req, id, body);
    if (!accounts.addKey(id, key)) throw new RelayError('key-exists');
    req.log.info({ account: req.account }, 'device key added');
    return reply.code(201).send({});
  });
}

/** The bearer token of an authenticated request (the authenticator checked its shape). */
function bearerToken(req: FastifyRequest): string {
  return /^Bearer (\S+)$/i.exec(String(req.headers.authorization ?? '').trim())?.[1] ?? '';
}
