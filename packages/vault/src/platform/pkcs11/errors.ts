/**
 * How PKCS#11 return values become `PlatformError`s.
 *
 * pkcs11js throws `Pkcs11Error` with the numeric CK_RV in `code` and its name
 * (`CKR_…`) in `message`; anything else it throws (a failed `dlopen`, a TypeError)
 * has no CK_RV. Messages never contain a PIN, a key or data, only names and labels.
 */
import pkcs11js from 'pkcs11js';
import { PlatformError } from '../../core/platform.js';

/** The CK_RV of a pkcs11js error, or `undefined` if it did not come from the module. */
export function ckrOf(err: unknown): number | undefined {
  if (err instanceof pkcs11js.Pkcs11Error && typeof err.code === 'number') return err.code;
  return undefined;
}

/** `CKR_…` name of a pkcs11js error for messages, or the error's own message. */
export function describe(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? err.name;
  return String(err);
}

const TOKEN_GONE = new Set<number>([
  pkcs11js.CKR_TOKEN_NOT_PRESENT,
  pkcs11js.CKR_DEVICE_REMOVED,
  pkcs11js.CKR_SLOT_ID_INVALID,
  pkcs11js.CKR_TOKEN_NOT_RECOGNIZED,
]);

const LOGIN = new Set<number>([
  pkcs11js.CKR_PIN_INCORRECT,
  pkcs11js.CKR_PIN_INVALID,
  pkcs11js.CKR_PIN_LEN_RANGE,
  pkcs11js.CKR_PIN_EXPIRED,
  pkcs11js.CKR_PIN_LOCKED,
  pkcs11js.CKR_USER_NOT_LOGGED_IN,
  pkcs11js.CKR_USER_PIN_NOT_INITIALIZED,
]);

const KEY_UNUSABLE = new Set<number>([
  pkcs11js.CKR_KEY_HANDLE_INVALID,
  pkcs11js.CKR_OBJECT_HANDLE_INVALID,
  pkcs11js.CKR_KEY_TYPE_INCONSISTENT,
  pkcs11js.CKR_KEY_FUNCTION_NOT_PERMITTED,
  pkcs11js.CKR_KEY_SIZE_RANGE,
]);

/**
 * The return values that C_Decrypt gives for a GCM tag that does not verify or for
 * ciphertext the mechanism rejects. SoftHSM2 2.6 answers a bad tag with
 * CKR_GENERAL_ERROR; the standard says CKR_ENCRYPTED_DATA_INVALID; other modules use
 * CKR_FUNCTION_FAILED or the *_LEN_RANGE codes. Because CKR_GENERAL_ERROR and
 * CKR_FUNCTION_FAILED are also what a broken device returns, the platform confirms
 * such a failure with a probe on the same session before it answers `null`
 * (see `Pkcs11Platform.unseal`).
 */
const AUTH_LIKE = new Set<number>([
  pkcs11js.CKR_ENCRYPTED_DATA_INVALID,
  pkcs11js.CKR_ENCRYPTED_DATA_LEN_RANGE,
  pkcs11js.CKR_DATA_INVALID,
  pkcs11js.CKR_DATA_LEN_RANGE,
  pkcs11js.CKR_GENERAL_ERROR,
  pkcs11js.CKR_FUNCTION_FAILED,
]);

/** Whether a C_Decrypt failure may be an authentication failure (to be confirmed). */
export function mayBeAuthFailure(err: unknown): boolean {
  const rv = ckrOf(err);
  return rv !== undefined && AUTH_LIKE.has(rv);
}

/** Whether the error means the key handle we cached no longer names a usable key. */
export function isKeyHandleError(err: unknown): boolean {
  const rv = ckrOf(err);
  return rv === pkcs11js.CKR_KEY_HANDLE_INVALID || rv === pkcs11js.CKR_OBJECT_HANDLE_INVALID;
}

/** Maps any error from a PKCS#11 call to a `PlatformError`; `what` names the operation. */
export function toPlatformError(err: unknown, what: string): PlatformError {
  if (err instanceof PlatformError) return err;
  const rv = ckrOf(err);
  const detail = `${what}: ${describe(err)}`;
  if (rv === undefined) return new PlatformError(`pkcs11: ${detail}`, 'hsm-failure');
  if (TOKEN_GONE.has(rv)) return new PlatformError(`pkcs11: token not present (${detail})`, 'token-missing');
  if (LOGIN.has(rv)) return new PlatformError(`pkcs11: login failed (${detail})`, 'login-failed');
  if (KEY_UNUSABLE.has(rv)) return new PlatformError(`pkcs11: key not usable (${detail})`, 'key-missing');
  return new PlatformError(`pkcs11: ${detail}`, 'hsm-failure');
}
