/**
 * @coffer/client: the Coffer SDK — enable password or key mode, recover, change the
 * password, disable, status; sessions with the relay; the relay's blob API as backup
 * storage. `KeyVault`, `RelayHttp`, the errors and the password rules are isomorphic
 * (browser-safe); `CofferClient`, `Profile` and `DeviceKey` are Node only.
 */
export {
  CofferClientError,
  WrongPasswordError,
  LockedError,
  NotRegisteredError,
  RateLimitedError,
  UnavailableError,
  InvalidCredentialsError,
  WeakPasswordError,
  UntrustedFleetBundleError,
  RETRY_SAFE,
  type CofferClientErrorCode,
} from './errors.js';
export { checkNotAccountPassword, isAccountPassword, SAME_AS_ACCOUNT_PASSWORD } from './account-password-check.js';
export { checkPassword, passwordWeakness, MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH } from './password-policy.js';
export { KeyVault, failureError, type KeyVaultOptions, type VaultStatus } from './key-vault.js';
export { RelayHttp, RelayResponseError, sessionSignatureInput, SESSION_SIGNATURE_LABEL, type RelayHttpOptions, type RelayErrorBody, type AccountProof } from './relay-http.js';
export { RelayBlobBackend } from './blob-backend.js';
export { DeviceKey } from './device-key.js';
export { Profile, profileDir, PROFILE_FILE, type ProfileState, type KeyMode } from './profile.js';
export { CofferClient, type CofferClientOptions, type ClientStatus } from './coffer-client.js';
