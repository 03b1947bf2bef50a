/**
 * The SDK's errors, after libsignal: one base class with a `code`, an `is(code)` guard,
 * the data each outcome carries (`guessesRemaining`, `retryAfter`), and for every code
 * whether retrying the same call is safe. Isomorphic (no `node:*`).
 *
 * | code | retry safe | meaning |
 * |---|---|---|
 * | wrong-password | yes (costs a guess) | the vault counted a wrong guess; `guessesRemaining` left |
 * | locked | no | the guess limit was reached and the vault erased the key; only the 64-digit key can decrypt |
 * | not-registered | no | the account has no vault record (password mode never enabled, or disabled) |
 * | already-registered | no | enabling password mode when a record exists: use changePassword, or disable first |
 * | rate-limited | after `retryAfter` s | too many attempts for now (relay or vault) |
 * | unavailable | yes | the relay or vault is unreachable, slow, or failing (5xx) |
 * | invalid-credentials | no | the relay refused the session: wrong device key, expired token, unknown account |
 * | not-logged-in | no | the profile has no account/session: run account create or login |
 * | weak-password | no | the new password does not meet the rules (`reason`) |
 * | no-backup-key | no | the profile holds no backup key yet: enable or recover first |
 * | stale | yes | the vault refused a replayed or too-slow message (clock skew) |
 * | superseded | yes (after the other recovery ends) | another recovery for this account started after this one and ended it (the guess it spent stays counted) |
 * | proof-required | no | disabling password mode needs this device's backup key or a recovery with the password first |
 * | protocol | no | the server answered something a correct server never would (bug or attack) |
 * | bad-config | no | a configuration value (server URL, fleet bundle, profile) is wrong; also UntrustedFleetBundleError |
 */
export type CofferClientErrorCode =
  | 'wrong-password'
  | 'locked'
  | 'not-registered'
  | 'already-registered'
  | 'rate-limited'
  | 'unavailable'
  | 'invalid-credentials'
  | 'not-logged-in'
  | 'weak-password'
  | 'no-backup-key'
  | 'stale'
  | 'superseded'
  | 'proof-required'
  | 'protocol'
  | 'bad-config';

/** Whether calling again (unchanged) can succeed. `rate-limited`: after `retryAfter`. */
export const RETRY_SAFE: Readonly<Record<CofferClientErrorCode, boolean>> = {
  'wrong-password': true,
  locked: false,
  'not-registered': false,
  'already-registered': false,
  'rate-limited': true,
  unavailable: true,
  'invalid-credentials': false,
  'not-logged-in': false,
  'weak-password': false,
  'no-backup-key': false,
  stale: true,
  superseded: true,
  'proof-required': false,
  protocol: false,
  'bad-config': false,
};

export class CofferClientError extends Error {
  override name = 'CofferClientError';
  readonly code: CofferClientErrorCode;
  /** For `wrong-password`: guesses left before the vault erases the key. */
  readonly guessesRemaining: number | undefined;
  /** For `rate-limited`: seconds to wait. */
  readonly retryAfter: number | undefined;
  /** For `weak-password`: which rule failed. */
  readonly reason: string | undefined;

  constructor(code: CofferClientErrorCode, message: string, data: { guessesRemaining?: number; retryAfter?: number; reason?: string; cause?: unknown } = {}) {
    super(message, data.cause !== undefined ? { cause: data.cause } : undefined);
    this.code = code;
    this.guessesRemaining = data.guessesRemaining;
    this.retryAfter = data.retryAfter;
    this.reason = data.reason;
  }

  /** Whether retrying the same call can succeed (see the table above). */
  get retrySafe(): boolean {
    return RETRY_SAFE[this.code];
  }

  /** `e` is a CofferClientError with this code (narrowing guard). */
  static is(e: unknown, code?: CofferClientErrorCode): e is CofferClientError {
    return e instanceof CofferClientError && (code === undefined || e.code === code);
  }

  is(code: CofferClientErrorCode): boolean {
    return this.code === code;
  }
}

export class WrongPasswordError extends CofferClientError {
  override name = 'WrongPasswordError';
  declare readonly guessesRemaining: number;
  constructor(guessesRemaining: number) {
    super('wrong-password', `wrong password: ${guessesRemaining} guess${guessesRemaining === 1 ? '' : 'es'} left before the key is erased`, { guessesRemaining });
  }
}

export class LockedError extends CofferClientError {
  override name = 'LockedError';
  constructor() {
    super('locked', 'the guess limit was reached and the vault erased the key: only the 64-digit key can decrypt these backups now');
  }
}

export class NotRegisteredError extends CofferClientError {
  override name = 'NotRegisteredError';
  constructor() {
    super('not-registered', 'password backups are not enabled for this account');
  }
}

export class RateLimitedError extends CofferClientError {
  override name = 'RateLimitedError';
  declare readonly retryAfter: number;
  constructor(retryAfter: number, what = 'too many attempts') {
    super('rate-limited', `${what}: try again in ${retryAfter} s`, { retryAfter });
  }
}

export class UnavailableError extends CofferClientError {
  override name = 'UnavailableError';
  constructor(message: string, cause?: unknown) {
    super('unavailable', message, cause !== undefined ? { cause } : {});
  }
}

export class InvalidCredentialsError extends CofferClientError {
  override name = 'InvalidCredentialsError';
  constructor(message = 'the server refused this device\'s credentials (unknown account, wrong device key or expired token): log in again') {
    super('invalid-credentials', message);
  }
}

export class WeakPasswordError extends CofferClientError {
  override name = 'WeakPasswordError';
  declare readonly reason: string;
  constructor(reason: string) {
    super('weak-password', `password too weak: ${reason}`, { reason });
  }
}

/**
 * `enablePassword` / `changePassword` without a configured fleet bundle: the pinned one
 * (if any) came from the relay, unverified, and registering a password with a
 * relay-chosen vault key would let the relay guess the password offline.
 */
export class UntrustedFleetBundleError extends CofferClientError {
  override name = 'UntrustedFleetBundleError';
  constructor() {
    super(
      'bad-config',
      'setting, using or removing a backup password needs the vault fleet\'s key bundle from a source you trust, not from the relay (a relay-served bundle would let the relay pose as the vault and test your password): ' +
        'get it from the operator (`coffer-vault bundle` prints it; with `npm start` it is .coffer-data/fleet-bundle.json) ' +
        'and pass it with --fleet-bundle FILE or COFFER_FLEET_BUNDLE=FILE (SDK: the fleetBundle option)',
    );
  }
}
