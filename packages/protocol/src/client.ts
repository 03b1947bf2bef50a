/**
 * A client for the vault protocol: drives the @serenity-kit/opaque client and the HPKE
 * envelope through register / recover / change password / delete / status. Used by the
 * tests and the benchmark now, and by the SDK later. Transport-agnostic: give it a
 * function that delivers request bytes to the vault (through the front end) for this
 * account and returns the response bytes.
 */
import { fromBase64Url, toBase64Url } from './bytes.js';
import { ProtocolError } from './errors.js';
import { opaque } from './opaque.js';
import { reusableEphemeral, sealRequest, type SealedRequest } from './envelope.js';
import type { EphemeralKeyPair } from './hpke.js';
import type { FleetKey } from './fleet-key.js';
import { DEFAULT_KSF, toSerenityKeyStretching, type KsfParams } from './ksf.js';
import { ownerToken, openRelease, unwrapBackupKey, wrapBackupKey } from './key-wrap.js';
import { sha256 } from './primitives.js';
import { decodeResponseBody, encodeRequestBody, pad, unpad, type OwnerProof, type VaultRequest, type VaultResponse } from './messages.js';
import { webRandom, type RandomSource } from './primitives.js';
import { Secret } from './secret.js';

export type VaultTransport = (request: Uint8Array) => Promise<Uint8Array>;

export interface VaultClientOptions {
  readonly fleetKey: FleetKey;
  /** The account the front end will assert for this client's requests. */
  readonly account: string;
  readonly transport: VaultTransport;
  /** KSF for new registrations; DEFAULT_KSF unless a test says otherwise. */
  readonly ksf?: KsfParams;
  readonly now?: () => number;
  readonly rng?: RandomSource;
  /**
   * TEST ONLY: receives the OPAQUE export key and session key of each flow, so the
   * blindness test can search captured traffic for them. Never set it outside tests.
   */
  readonly onSecretsForTesting?: (secrets: { readonly exportKey: Uint8Array; readonly sessionKey?: Uint8Array }) => void;
}

type NotOk = Exclude<VaultResponse, { outcome: 'ok' }>;
/** Outcomes a flow can end in besides success; `invalid` and friends are bugs and throw. */
export type FlowFailure = Extract<NotOk, { outcome: 'wrong-password' | 'locked' | 'not-registered' | 'rate-limited' | 'stale' | 'superseded' | 'proof-required' | 'already-registered' }>;

export type RecoverResult = { readonly outcome: 'ok'; readonly backupKey: Secret<Uint8Array>; readonly grant: Secret<Uint8Array> } | FlowFailure;
export type RegisterResult = { readonly outcome: 'ok' } | FlowFailure;
export type StatusResult = { readonly outcome: 'ok'; readonly guessesRemaining: number | null; readonly guessLimit: number; readonly ksf: KsfParams } | FlowFailure;

const FLOW_FAILURES = new Set(['wrong-password', 'locked', 'not-registered', 'rate-limited', 'stale', 'superseded', 'proof-required', 'already-registered']);

/** Thrown when the vault answers something a correct vault never would for this flow. */
export class UnexpectedResponseError extends ProtocolError {
  override readonly name = 'UnexpectedResponseError';
  constructor(readonly response: VaultResponse) {
    super(`vault answered ${response.op}: ${response.outcome}${response.outcome === 'invalid' ? ` (${response.reason})` : ''}`);
  }
}

function password(p: string | Secret<string>): string {
  return typeof p === 'string' ? p : p.expose();
}

export class VaultClient {
  readonly #o: Required<Omit<VaultClientOptions, 'onSecretsForTesting'>>;
  readonly #onSecretsForTesting: VaultClientOptions['onSecretsForTesting'];

  constructor(options: VaultClientOptions) {
    const { onSecretsForTesting, ...rest } = options;
    this.#o = { ksf: DEFAULT_KSF, now: () => Date.now(), rng: webRandom, ...rest };
    this.#onSecretsForTesting = onSecretsForTesting;
  }

  /**
   * One request/response exchange. `ephemeral`: the HPKE ephemeral key to seal with
   * (a recovery passes one for both its requests, spec §3.2); a fresh one when absent.
   * @throws on transport or decryption failure.
   */
  async send(req: VaultRequest, ephemeral?: EphemeralKeyPair): Promise<VaultResponse> {
    const sealed: SealedRequest = await sealRequest(this.#o.fleetKey, this.#o.account, req.op, pad(encodeRequestBody(req)), ephemeral ? { ephemeral } : {});
    const response = await this.#o.transport(sealed.bytes);
    const res = decodeResponseBody(unpad(await sealed.openResponse(response)));
    if (res.op !== req.op) throw new ProtocolError(`vault answered ${res.op} to ${req.op}`);
    return res;
  }

  async #proof(proof: Uint8Array | Secret<Uint8Array> | { readonly grant: Secret<Uint8Array> } | null): Promise<OwnerProof | null> {
    if (!proof) return null;
    if ('grant' in proof) return { kind: 'grant', grant: proof.grant.expose() };
    return { kind: 'token', token: await ownerToken(proof instanceof Secret ? proof.expose() : proof, this.#o.account) };
  }

  #failure(res: VaultResponse): FlowFailure {
    if (FLOW_FAILURES.has(res.outcome)) return res as FlowFailure;
    throw new UnexpectedResponseError(res);
  }

  /**
   * The record's state. With K (its owner token) or a fresh grant as proof, the answer
   * includes the guesses left; without, `guessesRemaining` is null (the front end, which
   * could ask too, must not learn from it whether a login succeeded).
   */
  async status(proof: Uint8Array | Secret<Uint8Array> | { readonly grant: Secret<Uint8Array> } | null = null): Promise<StatusResult> {
    const res = await this.send({ op: 'status', proof: await this.#proof(proof) });
    if (res.outcome === 'ok' && res.op === 'status') return { outcome: 'ok', guessesRemaining: res.guessesRemaining, guessLimit: res.guessLimit, ksf: res.ksf };
    return this.#failure(res);
  }

  /**
   * Enable password mode: OPAQUE registration, then K wrapped under the export key.
   * `grant` (from a fresh recovery) is needed only to replace an existing record.
   */
  async register(pw: string | Secret<string>, backupKey: Uint8Array | Secret<Uint8Array>, options: { guessLimit?: number; grant?: Secret<Uint8Array> } = {}): Promise<RegisterResult> {
    await opaque.ready;
    const k = backupKey instanceof Secret ? backupKey.expose() : backupKey;
    const start = opaque.client.startRegistration({ password: password(pw) });
    const r1 = await this.send({ op: 'register-start', grant: options.grant?.expose() ?? null, registrationRequest: fromBase64Url(start.registrationRequest) });
    if (r1.outcome !== 'ok' || r1.op !== 'register-start') return this.#failure(r1);
    const ksf = this.#o.ksf;
    const finish = opaque.client.finishRegistration({
      password: password(pw),
      clientRegistrationState: start.clientRegistrationState,
      registrationResponse: toBase64Url(r1.registrationResponse),
      keyStretching: toSerenityKeyStretching(ksf),
    });
    this.#onSecretsForTesting?.({ exportKey: fromBase64Url(finish.exportKey) });
    const wrappedKey = await wrapBackupKey(fromBase64Url(finish.exportKey), this.#o.account, k, this.#o.rng);
    const r2 = await this.send({
      op: 'register-finish',
      nonce: r1.nonce,
      registrationRecord: fromBase64Url(finish.registrationRecord),
      ksf,
      guessLimit: options.guessLimit ?? 0,
      wrappedKey,
      ownerTokenHash: await sha256(await ownerToken(k, this.#o.account)),
    });
    if (r2.outcome === 'ok') return { outcome: 'ok' };
    return this.#failure(r2);
  }

  /**
   * Recover K with the password: two round trips (spec §5.3). A wrong password is
   * detected locally after KE2 (the envelope does not open); the client then tells the
   * vault it abandons, which returns the guesses left.
   */
  async recover(pw: string | Secret<string>): Promise<RecoverResult> {
    await opaque.ready;
    const start = opaque.client.startLogin({ password: password(pw) });
    // One HPKE ephemeral for both requests: the vault reuses the login-start's DH with the
    // fleet key for the login-finish (spec §3.2); each request keeps its own key schedule.
    const ephemeral = await reusableEphemeral();
    const r1 = await this.send({ op: 'login-start', timestampMs: this.#o.now(), ke1: fromBase64Url(start.startLoginRequest) }, ephemeral);
    if (r1.outcome !== 'ok' || r1.op !== 'login-start') return this.#failure(r1);
    const finish = opaque.client.finishLogin({
      password: password(pw),
      clientLoginState: start.clientLoginState,
      loginResponse: toBase64Url(r1.ke2),
      keyStretching: toSerenityKeyStretching(r1.ksf),
    });
    if (finish) this.#onSecretsForTesting?.({ exportKey: fromBase64Url(finish.exportKey), sessionKey: fromBase64Url(finish.sessionKey) });
    const r2 = await this.send({ op: 'login-finish', nonce: r1.nonce, ke3: finish ? fromBase64Url(finish.finishLoginRequest) : null }, ephemeral);
    if (r2.outcome !== 'ok' || r2.op !== 'login-finish') return this.#failure(r2);
    if (!finish) throw new UnexpectedResponseError(r2);
    const wrapped = await openRelease(fromBase64Url(finish.sessionKey), this.#o.account, r2.releasedKey);
    const backupKey = await unwrapBackupKey(fromBase64Url(finish.exportKey), this.#o.account, wrapped);
    return { outcome: 'ok', backupKey: new Secret(backupKey), grant: new Secret(r2.grant) };
  }

  /** Recover with the old password, then atomically replace the record (spec §5.4). */
  async changePassword(oldPw: string | Secret<string>, newPw: string | Secret<string>, options: { guessLimit?: number } = {}): Promise<RecoverResult> {
    const recovered = await this.recover(oldPw);
    if (recovered.outcome !== 'ok') return recovered;
    const registered = await this.register(newPw, recovered.backupKey, { ...options, grant: recovered.grant });
    if (registered.outcome !== 'ok') return registered;
    return recovered;
  }

  /**
   * Disable password mode: the vault deletes the record. Proof that the caller may: K
   * itself (its owner token is derived here and never leaves the HPKE envelope), or the
   * grant of a login that just succeeded. Without either the vault answers
   * `proof-required` for an active record.
   */
  async delete(proof: Uint8Array | Secret<Uint8Array> | { readonly grant: Secret<Uint8Array> } | null): Promise<RegisterResult> {
    const res = await this.send({ op: 'delete', timestampMs: this.#o.now(), proof: await this.#proof(proof) });
    if (res.outcome === 'ok') return { outcome: 'ok' };
    return this.#failure(res);
  }
}

