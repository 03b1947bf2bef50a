/**
 * The vault core: a pure state machine over bytes (spec/vault-protocol.md §5).
 *
 *   open(account, requestBytes)        → the decrypted request (or a typed refusal)
 *   decide(opened, storedRecordBytes)  → the sealed response + the one store write to
 *                                        commit *before* the response may leave
 *
 * It imports no `node:*`, no store, no network: everything outside comes through the
 * Platform (clock, randomness, sealing, the fleet key's DH). The caller (server) does
 * the compare-and-swap; on a conflict it calls `decide` again with the fresh record, so
 * no answer is ever computed from stale state. `decide` has no side effects.
 */
import { opaque } from '@coffer/protocol';
import {
  ACCOUNT_ID_PATTERN,
  concat,
  decodeRequestBody,
  DecodeError,
  DecryptionError,

  encodePaddedResponseBody,
  equalBytes,
  fromBase64Url,
  InvalidPeerKeyError,
  ksfAtLeast,
  LABELS,
  openRequest,
  parseRequest,
  RESPONSE_NONCE_LENGTH,
  sealRelease,
  sha256,
  SIZES,
  toBase64Url,
  toHex,
  unpad,
  utf8,
  type FleetKey,
  type OpenedRequest,
  type OwnerProof,
  type Operation,
  type OutcomeName,
  type Secret,
  type VaultRequest,
  type VaultResponse,
} from '@coffer/protocol';
import { checkPolicy, type CorePolicy } from './config.js';
import { DhReuse } from './dh-reuse.js';
import { KEY_LABELS } from './key-labels.js';
import { PlatformError, type Platform } from './platform.js';
import { DEFAULT_RECORD_KEYRING, RecordIntegrityError, sealRecord, unsealRecord, type AccountRecord, type ActiveRecord, type RecordKeyring } from './record.js';

/** Why a request could not even be opened. The server maps each to an HTTP 4xx. */
export type RefusalCode = 'bad-account' | 'bad-length' | 'bad-version' | 'unknown-operation' | 'unknown-fleet-key' | 'undecryptable';

export type OpenResult = { readonly kind: 'opened'; readonly request: OpenedVaultRequest } | { readonly kind: 'refused'; readonly code: RefusalCode; readonly message: string };

export interface OpenedVaultRequest {
  readonly account: string;
  readonly op: Operation;
  /** `null` when the body inside a valid envelope does not parse (answered `invalid`). */
  readonly body: VaultRequest | null;
  readonly envelope: OpenedRequest;
}

/** The single store change a decision needs; committed with compare-and-swap. */
export type RecordWrite =
  /** `record` is what `value` seals: a caller may hand it back to `decide` as `known`. */
  | { readonly kind: 'put'; readonly value: Uint8Array; readonly record: AccountRecord }
  | { readonly kind: 'delete' };

export interface Decision {
  readonly op: Operation;
  readonly outcome: OutcomeName;
  /** The sealed, fixed-length response. Release only after `write` is committed. */
  readonly response: Uint8Array;
  readonly write: RecordWrite | null;
  /** For metrics: a guess was counted / a record was erased by this decision. */
  readonly guessCounted: boolean;
  readonly recordErased: boolean;
  /**
   * When set, the committed record has spent its last guess: at this time (the end of
   * its open login) it must be erased even if nobody calls again. The server remembers
   * it (RecordStore sweep index) and then calls `sweep`.
   */
  readonly eraseAt: number | null;
}

/** What an abandoning login-finish has verified in place of a KE3 (fails): the same work as a guess. */
const ABANDONED_KE3 = new Uint8Array(SIZES.ke3);
/** `"coffer/vault/v1/login-replay" ‖ 0x00`, encoded once. */
const LOGIN_REPLAY_PREFIX = concat(utf8(LABELS.loginReplayDigest), new Uint8Array([0]));

/**
 * The digest a login-start is remembered by (spec §5.2 step 4):
 * `SHA-256("coffer/vault/v1/login-replay" ‖ 0x00 ‖ enc)[0..16]`. The input is one array
 * after the prefix encoded once (before: a UTF-8 encoding, a one-byte array and a `concat`
 * per login-start).
 */
export async function loginReplayDigest(enc: Uint8Array): Promise<Uint8Array> {
  const input = new Uint8Array(LOGIN_REPLAY_PREFIX.length + enc.length);
  input.set(LOGIN_REPLAY_PREFIX, 0);
  input.set(enc, LOGIN_REPLAY_PREFIX.length);
  return (await sha256(input)).slice(0, 16);
}

export class VaultCore {
  /** Login-starts' fleet DHs for their login-finishes (dh-reuse.ts); only saves HSM work. */
  readonly #dhReuse: DhReuse;

  private constructor(
    private readonly platform: Platform,
    private readonly policy: CorePolicy,
    private readonly fleetKey: FleetKey,
    private readonly opaqueSetup: Secret<string>,
    private readonly recordKeys: RecordKeyring,
  ) {
    this.#dhReuse = new DhReuse(policy.loginTtlMs);
  }

  /**
   * @param opaqueSetup the unsealed OPAQUE server setup (see opaque-setup.ts)
   * @param recordKeys the record-sealing keyring (fleet key rotation; default: the one v1 key)
   * @throws RangeError for a bad policy or a keyring whose current key is not in it
   */
  static async create(platform: Platform, policy: CorePolicy, fleetKey: FleetKey, opaqueSetup: Secret<string>, recordKeys: RecordKeyring = DEFAULT_RECORD_KEYRING): Promise<VaultCore> {
    if (!recordKeys.all.includes(recordKeys.current)) throw new RangeError('recordKeys: current must be one of all');
    await opaque.ready;
    return new VaultCore(platform, checkPolicy(policy), fleetKey, opaqueSetup, recordKeys);
  }

  /**
   * Parses and decrypts one request. Never touches a record. The only state it keeps:
   * an opened login-start's fleet DH, which its login-finish (same ephemeral, spec §3.2)
   * takes instead of a second DH in the platform.
   */
  async open(account: string, bytes: Uint8Array): Promise<OpenResult> {
    if (!ACCOUNT_ID_PATTERN.test(account)) return refuse('bad-account', 'account: must be 1..128 printable ASCII characters');
    let header;
    try {
      header = parseRequest(bytes);
    } catch (err) {
      if (err instanceof DecodeError) {
        const code = err.code === 'bad-version' ? 'bad-version' : err.code === 'unknown-operation' ? 'unknown-operation' : 'bad-length';
        return refuse(code, err.message);
      }
      throw err;
    }
    if (!equalBytes(header.keyId, this.fleetKey.keyId)) return refuse('unknown-fleet-key', 'request is sealed to a fleet key this vault does not hold');
    let envelope: OpenedRequest;
    let dhOutput: Uint8Array | null = null;
    try {
      envelope = await openRequest(header, account, this.fleetKey.publicKey, async (enc) => {
        const kept = header.op === 'login-finish' ? this.#dhReuse.take(account, enc, this.platform.now()) : null;
        return (dhOutput = kept ?? (await this.#fleetDh(enc)));
      });
    } catch (err) {
      if (err instanceof DecryptionError) return refuse('undecryptable', 'request does not decrypt for this account and operation');
      throw err;
    }
    if (header.op === 'login-start' && dhOutput) this.#dhReuse.keep(account, header.enc, dhOutput, this.platform.now());
    let body: VaultRequest | null;
    try {
      body = decodeRequestBody(header.op, unpad(envelope.paddedBody));
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      body = null;
    }
    return { kind: 'opened', request: { account, op: header.op, body, envelope } };
  }

  /**
   * DH with the fleet key for HPKE. Only a bad point (PlatformError `bad-argument`) is
   * the sender's fault and becomes InvalidPeerKeyError (→ `undecryptable`); any other
   * platform failure propagates so the service answers 503 `platform-failure` and the
   * relay fails over.
   */
  async #fleetDh(enc: Uint8Array): Promise<Uint8Array> {
    try {
      return await this.platform.ecdh(KEY_LABELS.fleetHpke, enc);
    } catch (err) {
      if (err instanceof PlatformError && err.code === 'bad-argument') throw new InvalidPeerKeyError(err.message);
      throw err;
    }
  }

  /**
   * Decides the answer to an opened request given the account's stored record.
   *
   * `known`, when given, is the record that `stored` seals, vouched for by the caller:
   * it committed exactly these bytes itself from a `RecordWrite` (`write.record`), so
   * unsealing them again would only return the same record. It saves the platform an
   * unseal (an HSM call) for the login-finish that follows a login-start.
   * @throws RecordIntegrityError when the stored record does not authenticate
   */
  async decide(req: OpenedVaultRequest, stored: Uint8Array | null, known?: AccountRecord): Promise<Decision> {
    const now = this.platform.now();
    const loaded = stored ? (known ?? (await unsealRecord(this.platform, req.account, stored, this.recordKeys))) : null;
    const { record, erased } = normalize(loaded, now);
    const step = req.body === null ? this.#answer({ outcome: 'invalid', op: req.op, reason: 'bad-body' }) : await this.#step(req, req.body, record, now);
    // Normalization may have erased an exhausted record; that must reach the store even
    // when the operation itself writes nothing.
    let write = step.write;
    if (!write && erased && record) write = await this.#put(req.account, record);
    const response = await req.envelope.sealResponse(encodePaddedResponseBody(step.response), this.platform.randomBytes(RESPONSE_NONCE_LENGTH));
    return {
      op: req.op,
      outcome: step.response.outcome,
      response,
      write,
      guessCounted: step.guessCounted ?? false,
      recordErased: erased || (step.erased ?? false),
      eraseAt: write?.kind === 'put' ? exhaustedUntil(write.record) : null,
    };
  }

  /**
   * The background half of the guess limit: for a record whose last guess is spent,
   * the erasure once its open login has ended — without waiting for anyone to call.
   * Returns the write to commit (compare-and-swap on `stored`'s version), or null when
   * there is nothing to erase (yet, or any more).
   * @throws RecordIntegrityError when the stored record does not authenticate
   */
  async sweep(account: string, stored: Uint8Array): Promise<RecordWrite | null> {
    const now = this.platform.now();
    const { record, erased } = normalize(await unsealRecord(this.platform, account, stored, this.recordKeys), now);
    return erased && record ? this.#put(account, record) : null;
  }

  /**
   * Whether `stored` is a record this fleet sealed for `account` (any version of it):
   * tells a forged or corrupted record (`record-integrity`) from a genuine but old one
   * written back (`store-rolled-back`).
   */
  async authentic(account: string, stored: Uint8Array): Promise<boolean> {
    try {
      await unsealRecord(this.platform, account, stored, this.recordKeys);
      return true;
    } catch (err) {
      if (err instanceof RecordIntegrityError) return false;
      throw err;
    }
  }

  #answer(response: VaultResponse, extra: Partial<Step> = {}): Step {
    return { response, write: null, ...extra };
  }

  async #put(account: string, rec: AccountRecord): Promise<RecordWrite> {
    return { kind: 'put', value: await sealRecord(this.platform, account, rec, this.recordKeys), record: rec };
  }

  async #step(req: OpenedVaultRequest, body: VaultRequest, rec: AccountRecord | null, now: number): Promise<Step> {
    const account = req.account;
    switch (body.op) {
      case 'status':
        if (!rec || rec.state === 'pending-registration') return this.#answer({ outcome: 'not-registered', op: body.op });
        if (rec.state === 'erased') return this.#answer({ outcome: 'locked', op: body.op });
        // The guesses left only for the owner: from them the front end (which may ask
        // status for any account) would learn whether a user's login just succeeded.
        return this.#answer({ outcome: 'ok', op: 'status', guessesRemaining: (await ownerProven(rec, body.proof)) ? rec.guessLimit - rec.guessesUsed : null, guessLimit: rec.guessLimit, ksf: rec.ksf });

      case 'register-start':
        return this.#registerStart(account, body, rec, now);

      case 'register-finish':
        return this.#registerFinish(account, body, rec, now);

      case 'login-start':
        return this.#loginStart(req, body, rec, now);

      case 'login-finish':
        return this.#loginFinish(account, body, rec, now);

      case 'delete':
        return this.#delete(account, body, rec, now);
    }
  }

  /**
   * Deleting an active record needs proof (spec §5.5): the grant of a login that just
   * succeeded, or the owner token derived from K. The front end has neither, so it
   * cannot erase records — which would also let it reset what a registration may do.
   * What remains after a delete is the register-start rate window, if it holds any.
   */
  async #delete(account: string, body: Extract<VaultRequest, { op: 'delete' }>, rec: AccountRecord | null, now: number): Promise<Step> {
    const op = body.op;
    if (Math.abs(now - body.timestampMs) > this.policy.freshnessWindowMs) return this.#answer({ outcome: 'stale', op });
    if (!rec || (rec.state === 'pending-registration' && !rec.registration)) return this.#answer({ outcome: 'not-registered', op });
    if (rec.state === 'active') {
      // A delete stamped before this registration (a captured one, replayed after the user
      // registered again with the same K) does not apply to it.
      if (body.timestampMs < rec.registeredAt) return this.#answer({ outcome: 'stale', op });
      if (!(await ownerProven(rec, body.proof))) return this.#answer({ outcome: 'proof-required', op });
    }
    const starts = rec.registerStarts;
    const write: RecordWrite = starts.length > 0 ? await this.#put(account, { state: 'pending-registration', registration: null, registerStarts: starts }) : { kind: 'delete' };
    return { response: { outcome: 'ok', op }, write, erased: rec.state === 'active' };
  }

  async #registerStart(account: string, body: Extract<VaultRequest, { op: 'register-start' }>, rec: AccountRecord | null, now: number): Promise<Step> {
    const op = body.op;
    if (rec?.state === 'active') {
      // Replacing a live record needs the grant of a login that just succeeded (change
      // password). Without it, registering again could reset the guess counter.
      if (!body.grant) return this.#answer({ outcome: 'already-registered', op });
      if (!rec.changeGrant || !equalBytes(rec.changeGrant.nonce, body.grant)) return this.#answer({ outcome: 'stale', op });
    }
    // Every register-start evaluates the OPRF, so each counts against a per-account
    // window kept in the record (its expiry times on the vault's clock).
    const starts = rec?.registerStarts ?? [];
    if (starts.length >= this.policy.registerStartsPerWindow) {
      return this.#answer({ outcome: 'rate-limited', op, retryAfterSeconds: retryAfter(Math.min(...starts), now) });
    }
    // A fresh registration ID, so a fresh OPRF key: an evaluation made here is under a
    // key that only this registration can ever use (spec §5.1). Evaluations collected
    // before it, or for any other registration, say nothing about its password.
    const registrationId = this.platform.randomBytes(SIZES.registrationId);
    let response: string;
    try {
      response = opaque.server.createRegistrationResponse({ serverSetup: this.opaqueSetup.expose(), userIdentifier: credentialIdentifier(account, registrationId), registrationRequest: toBase64Url(body.registrationRequest) }).registrationResponse;
    } catch {
      return this.#answer({ outcome: 'invalid', op, reason: 'bad-body' });
    }
    const nonce = this.platform.randomBytes(SIZES.nonce);
    const registration = { nonce, expiresAt: now + this.policy.registrationTtlMs, registrationId };
    const registerStarts = [...starts, now + this.policy.registerWindowMs];
    let next: AccountRecord;
    if (rec?.state === 'active') {
      next = { ...rec, pendingRegistration: registration, changeGrant: null, registerStarts };
    } else {
      next = { state: 'pending-registration', registration, registerStarts };
    }
    return {
      response: { outcome: 'ok', op: 'register-start', nonce, registrationResponse: fromBase64Url(response), guessLimit: this.policy.guessLimit },
      write: await this.#put(account, next),
    };
  }

  async #registerFinish(account: string, body: Extract<VaultRequest, { op: 'register-finish' }>, rec: AccountRecord | null, now: number): Promise<Step> {
    const op = body.op;
    if (!this.policy.insecureAllowWeakKsfForTesting && !ksfAtLeast(body.ksf, this.policy.minimumKsf)) return this.#answer({ outcome: 'invalid', op, reason: 'weak-ksf' });
    const guessLimit = body.guessLimit === 0 ? this.policy.guessLimit : body.guessLimit;
    if (guessLimit > this.policy.guessLimit) return this.#answer({ outcome: 'invalid', op, reason: 'bad-guess-limit' });
    if (body.wrappedKey.length === 0) return this.#answer({ outcome: 'invalid', op, reason: 'bad-body' });
    const pending = rec?.state === 'pending-registration' ? rec.registration : rec?.state === 'active' ? rec.pendingRegistration : null;
    // The nonce is single-use: it came from register-start and is consumed here, so a
    // captured or retried register-finish cannot recreate (and so reset) a record.
    if (!pending || pending.expiresAt < now || !equalBytes(pending.nonce, body.nonce)) return this.#answer({ outcome: 'stale', op });
    const next: ActiveRecord = {
      state: 'active',
      guessLimit,
      guessesUsed: 0,
      ksf: body.ksf,
      registrationRecord: body.registrationRecord,
      registrationId: pending.registrationId,
      ownerTokenHash: body.ownerTokenHash,
      registeredAt: now,
      registerStarts: rec?.registerStarts ?? [],
      wrappedKey: body.wrappedKey,
      pendingLogin: null,
      pendingRegistration: null,
      changeGrant: null,
      seenLogins: rec?.state === 'active' ? rec.seenLogins : [],
    };
    return { response: { outcome: 'ok', op: 'register-finish' }, write: await this.#put(account, next) };
  }

  async #loginStart(req: OpenedVaultRequest, body: Extract<VaultRequest, { op: 'login-start' }>, rec: AccountRecord | null, now: number): Promise<Step> {
    const op = body.op;
    if (Math.abs(now - body.timestampMs) > this.policy.freshnessWindowMs) return this.#answer({ outcome: 'stale', op });
    // No fake record for an unknown account (RFC 9807 §10.9 enumeration defence): `status`
    // tells the front end whether a record exists anyway, and a fake KE2 is an OPRF
    // evaluation nobody counts. No active record, no evaluation (spec §5.2).
    if (!rec || rec.state === 'pending-registration') return this.#answer({ outcome: 'not-registered', op });
    if (rec.state === 'erased') return this.#answer({ outcome: 'locked', op });

    const digest = await loginReplayDigest(req.envelope.enc);
    const seen = rec.seenLogins.filter((s) => s.expiresAt >= now);
    if (seen.some((s) => equalBytes(s.digest, digest))) return this.#answer({ outcome: 'stale', op });
    if (seen.length >= this.policy.loginsPerWindow) {
      return this.#answer({ outcome: 'rate-limited', op, retryAfterSeconds: retryAfter(Math.min(...seen.map((s) => s.expiresAt)), now) });
    }
    if (rec.guessesUsed >= rec.guessLimit) {
      // The last guess is out and its login is still open: nothing to give until it ends.
      return this.#answer({ outcome: 'rate-limited', op, retryAfterSeconds: retryAfter(rec.pendingLogin?.expiresAt ?? now, now) });
    }
    let started: { serverLoginState: string; loginResponse: string };
    try {
      started = opaque.server.startLogin({
        serverSetup: this.opaqueSetup.expose(),
        userIdentifier: credentialIdentifier(req.account, rec.registrationId),
        registrationRecord: toBase64Url(rec.registrationRecord),
        startLoginRequest: toBase64Url(body.ke1),
      });
    } catch {
      return this.#answer({ outcome: 'invalid', op, reason: 'bad-body' });
    }
    const nonce = this.platform.randomBytes(SIZES.nonce);
    // The guess is counted in the record written here; the server commits this write
    // before it releases KE2 (the answer that lets the client test its password).
    const next: ActiveRecord = {
      ...rec,
      guessesUsed: rec.guessesUsed + 1,
      pendingLogin: { nonce, expiresAt: now + this.policy.loginTtlMs, serverLoginState: fromBase64Url(started.serverLoginState) },
      // Remembered on the vault's clock, not the request's: a timestamp from the edge of
      // the window must not make the entry (and the rate limit it feeds) expire early.
      seenLogins: [...seen, { digest, expiresAt: now + this.policy.freshnessWindowMs }],
    };
    return {
      response: { outcome: 'ok', op: 'login-start', nonce, ke2: fromBase64Url(started.loginResponse), ksf: rec.ksf },
      write: await this.#put(req.account, next),
      guessCounted: true,
    };
  }

  async #loginFinish(account: string, body: Extract<VaultRequest, { op: 'login-finish' }>, rec: AccountRecord | null, now: number): Promise<Step> {
    const op = body.op;
    if (!rec || rec.state === 'pending-registration') return this.#answer({ outcome: 'not-registered', op });
    if (rec.state === 'erased') return this.#answer({ outcome: 'locked', op });
    const pending = rec.pendingLogin;
    // Single use: the login state lives in the record and is cleared by the first
    // login-finish that names it, right or wrong; a replayed KE3 finds nothing.
    if (pending && pending.expiresAt >= now && !equalBytes(pending.nonce, body.nonce)) {
      // Another login-start for this account came after this one and replaced it.
      return this.#answer({ outcome: 'superseded', op });
    }
    if (!pending || pending.expiresAt < now || !equalBytes(pending.nonce, body.nonce)) return this.#answer({ outcome: 'stale', op });
    const consumed: ActiveRecord = { ...rec, pendingLogin: null };

    // Every outcome does the same work (the front end can time the vault's answers, and a
    // right password must not take longer than a wrong one): a client that abandons
    // (wrong password, no KE3) has a KE3 of zeros verified, which fails; a wrong guess
    // seals a release under a throwaway key, as a right one seals the key; both draw the
    // same random bytes.
    let sessionKey: Uint8Array | null = null;
    try {
      const key = fromBase64Url(opaque.server.finishLogin({ serverLoginState: toBase64Url(pending.serverLoginState), finishLoginRequest: toBase64Url(body.ke3 ?? ABANDONED_KE3) }).sessionKey);
      if (body.ke3) sessionKey = key;
    } catch {
      sessionKey = null; // RFC 9807 §6.4.4: a KE3 that fails to verify is a wrong password
    }
    const grant = this.platform.randomBytes(SIZES.nonce);
    const releaseNonce = this.platform.randomBytes(12);
    if (!sessionKey) {
      // The grant's random bytes (never sent on this path) as the throwaway key: both paths draw the same randomness.
      await sealRelease(grant, account, rec.wrappedKey, releaseNonce);
      if (consumed.guessesUsed >= consumed.guessLimit) {
        return { response: { outcome: 'locked', op }, write: await this.#put(account, erasedNow(now, consumed.registerStarts)), erased: true };
      }
      return { response: { outcome: 'wrong-password', op, guessesRemaining: consumed.guessLimit - consumed.guessesUsed }, write: await this.#put(account, consumed) };
    }
    const released = await sealRelease(sessionKey, account, rec.wrappedKey, releaseNonce);
    const next: ActiveRecord = { ...consumed, guessesUsed: 0, changeGrant: { nonce: grant, expiresAt: now + this.policy.grantTtlMs } };
    return { response: { outcome: 'ok', op: 'login-finish', grant, releasedKey: released }, write: await this.#put(account, next) };
  }
}

interface Step {
  readonly response: VaultResponse;
  readonly write: RecordWrite | null;
  readonly guessCounted?: boolean;
  readonly erased?: boolean;
}

function refuse(code: RefusalCode, message: string): OpenResult {
  return { kind: 'refused', code, message };
}

function retryAfter(until: number, now: number): number {
  return Math.min(0xffff, Math.max(1, Math.ceil((until - now) / 1000)));
}

/** Whether `proof` is the record's owner token (from K) or its unexpired login grant; constant-time compares. */
async function ownerProven(rec: ActiveRecord, proof: OwnerProof | null): Promise<boolean> {
  if (proof?.kind === 'grant') return rec.changeGrant !== null && equalBytes(rec.changeGrant.nonce, proof.grant);
  if (proof?.kind === 'token') return rec.ownerTokenHash !== null && equalBytes(await sha256(proof.token), rec.ownerTokenHash);
  return false;
}

/** For a record whose guesses are all spent: when its open login ends (then it is erased). */
export function exhaustedUntil(rec: AccountRecord): number | null {
  if (rec.state !== 'active' || rec.guessesUsed < rec.guessLimit) return null;
  return rec.pendingLogin?.expiresAt ?? 0;
}

function erasedNow(now: number, registerStarts: readonly number[]): AccountRecord {
  return { state: 'erased', erasedAt: now, registerStarts };
}

/**
 * The OPAQUE credential identifier, from which the OPRF key is derived (RFC 9807 §4.1.1:
 * oprf_key = DeriveKeyPair(oprf_seed, credential_identifier)). Per registration:
 * label || 0x00 || account || 0x00 || hex(registration ID). A format-1 record (no ID)
 * keeps the bare account it was registered under; account IDs are printable ASCII, so
 * no account equals a per-registration identifier.
 */
export function credentialIdentifier(account: string, registrationId: Uint8Array | null): string {
  return registrationId === null ? account : `${LABELS.credentialIdentifier}\u0000${account}\u0000${toHex(registrationId)}`;
}


/**
 * Applies expiries: an abandoned login ends, and a record whose last guess was spent
 * (and whose login has ended) is erased — its envelope and wrapped key are dropped.
 */
function normalize(rec: AccountRecord | null, now: number): { record: AccountRecord | null; erased: boolean } {
  if (!rec) return { record: null, erased: false };
  const registerStarts = rec.registerStarts.filter((t) => t > now);
  if (rec.state === 'pending-registration') {
    const registration = rec.registration && rec.registration.expiresAt >= now ? rec.registration : null;
    return { record: registration || registerStarts.length > 0 ? { state: 'pending-registration', registration, registerStarts } : null, erased: false };
  }
  if (rec.state === 'erased') return { record: { ...rec, registerStarts }, erased: false };
  const pendingLogin = rec.pendingLogin && rec.pendingLogin.expiresAt >= now ? rec.pendingLogin : null;
  if (rec.guessesUsed >= rec.guessLimit && !pendingLogin) return { record: erasedNow(now, registerStarts), erased: true };
  return {
    record: {
      ...rec,
      registerStarts,
      pendingLogin,
      pendingRegistration: rec.pendingRegistration && rec.pendingRegistration.expiresAt >= now ? rec.pendingRegistration : null,
      changeGrant: rec.changeGrant && rec.changeGrant.expiresAt >= now ? rec.changeGrant : null,
    },
    erased: false,
  };
}

