/**
 * Password mode over the vault protocol: the protocol package's VaultClient (OPAQUE +
 * HPKE, spec/vault-protocol.md §5) with its outcomes turned into the SDK's typed
 * errors. Isomorphic (no `node:*`): this is the part a browser app uses as is.
 */
import { ProtocolError, VaultClient, type Secret, type FleetKey, type FlowFailure, type KsfParams, type VaultTransport } from '@coffer/protocol';
import { CofferClientError, LockedError, NotRegisteredError, RateLimitedError, WrongPasswordError } from './errors.js';
import { checkPassword } from './password-policy.js';

export interface KeyVaultOptions {
  readonly fleetKey: FleetKey;
  /** The account ID as the vault sees it (the relay asserts it; e.g. `local:…`). */
  readonly account: string;
  readonly transport: VaultTransport;
  /** KSF for new registrations (default: the protocol's DEFAULT_KSF). */
  readonly ksf?: KsfParams;
  /** TEST ONLY: see VaultClientOptions.onSecretsForTesting. */
  readonly onSecretsForTesting?: (secrets: { readonly exportKey: Uint8Array; readonly sessionKey?: Uint8Array }) => void;
}

export type VaultStatus =
  /** `guessesRemaining` is null when this device could not prove it holds K (the vault tells only the owner). */
  | { readonly state: 'active'; readonly guessesRemaining: number | null; readonly guessLimit: number; readonly ksf: KsfParams }
  | { readonly state: 'locked' }
  | { readonly state: 'not-registered' };

/** Turns a flow's non-ok outcome into the SDK error a caller can act on. */
export function failureError(f: FlowFailure): CofferClientError {
  switch (f.outcome) {
    case 'wrong-password':
      return new WrongPasswordError(f.guessesRemaining);
    case 'locked':
      return new LockedError();
    case 'not-registered':
      return new NotRegisteredError();
    case 'rate-limited':
      return new RateLimitedError(f.retryAfterSeconds, 'the vault is limiting attempts for this account');
    case 'stale':
      return new CofferClientError('stale', 'the vault refused a stale message: too slow, replayed, or this device\'s clock is off; check the clock and try again');
    case 'superseded':
      return new CofferClientError(
        'superseded',
        'another recovery for this account started (on another device or in another window) after this one, which ended this attempt; the guess it used stays counted. Let the other one finish, then try again. If no other recovery was yours, check `coffer vault status` and consider changing the password',
      );
    case 'proof-required':
      return new CofferClientError('proof-required', 'the vault deletes a password backup only for a device that holds the backup key, or right after a recovery with the password: recover first (`coffer vault recover`), then disable');
    case 'already-registered':
      return new CofferClientError('already-registered', 'password backups are already enabled for this account: change the password, or disable first');
  }
}

/** Errors from below (protocol bugs, undecryptable answers) become `protocol`. */
async function guard<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof CofferClientError) throw e;
    if (e instanceof ProtocolError) throw new CofferClientError('protocol', `the vault's answer is not valid: ${e.message}`, { cause: e });
    throw e;
  }
}

export class KeyVault {
  readonly #client: VaultClient;

  constructor(options: KeyVaultOptions) {
    this.#client = new VaultClient({
      fleetKey: options.fleetKey,
      account: options.account,
      transport: options.transport,
      ...(options.ksf ? { ksf: options.ksf } : {}),
      ...(options.onSecretsForTesting ? { onSecretsForTesting: options.onSecretsForTesting } : {}),
    });
  }

  /**
   * Registers `password` and K (spec §5.1). The password must pass the rules first.
   * @throws WeakPasswordError, CofferClientError('already-registered'), RateLimitedError, UnavailableError
   */
  async enable(password: Secret<string>, backupKey: Secret<Uint8Array>, options: { guessLimit?: number } = {}): Promise<void> {
    checkPassword(password.expose());
    const r = await guard(() => this.#client.register(password, backupKey, options));
    if (r.outcome !== 'ok') throw failureError(r);
  }

  /**
   * K from the password (spec §5.2–5.3).
   * @throws WrongPasswordError{guessesRemaining}, LockedError, NotRegisteredError, RateLimitedError, UnavailableError
   */
  async recover(password: Secret<string>): Promise<Secret<Uint8Array>> {
    const r = await guard(() => this.#client.recover(password));
    if (r.outcome !== 'ok') throw failureError(r);
    return r.backupKey;
  }

  /**
   * Replaces the password, keeping K (spec §5.4). The new password is checked before the
   * old one is tried, so a weak new password costs no guess.
   * @returns K (recovered with the old password)
   */
  async changePassword(oldPassword: Secret<string>, newPassword: Secret<string>, options: { guessLimit?: number } = {}): Promise<Secret<Uint8Array>> {
    checkPassword(newPassword.expose());
    const r = await guard(() => this.#client.changePassword(oldPassword, newPassword, options));
    if (r.outcome !== 'ok') throw failureError(r);
    return r.backupKey;
  }

  /**
   * Erases the vault record, proving the right to: with K (its owner token), or with the
   * password (a recovery first, whose grant authorizes the delete; it spends a guess only
   * if the password is wrong).
   * @throws NotRegisteredError when there is none, CofferClientError('proof-required')
   */
  async remove(proof: { readonly backupKey: Secret<Uint8Array> } | { readonly password: Secret<string> }): Promise<void> {
    let grant: Secret<Uint8Array> | null = null;
    if ('password' in proof) {
      const rec = await guard(() => this.#client.recover(proof.password));
      if (rec.outcome !== 'ok') throw failureError(rec);
      grant = rec.grant;
    }
    const r = await guard(() => this.#client.delete(grant ? { grant } : 'backupKey' in proof ? proof.backupKey : null));
    if (r.outcome !== 'ok') throw failureError(r);
  }

  /**
   * The record's state; `locked` and `not-registered` are states here, not errors. With K
   * (its owner token proves ownership) the answer includes the guesses left.
   */
  async status(backupKey: Secret<Uint8Array> | null = null): Promise<VaultStatus> {
    const r = await guard(() => this.#client.status(backupKey));
    if (r.outcome === 'ok') return { state: 'active', guessesRemaining: r.guessesRemaining, guessLimit: r.guessLimit, ksf: r.ksf };
    if (r.outcome === 'locked') return { state: 'locked' };
    if (r.outcome === 'not-registered') return { state: 'not-registered' };
    throw failureError(r);
  }
}
