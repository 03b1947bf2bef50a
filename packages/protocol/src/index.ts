/**
 * @coffer/protocol: the Backup Key Vault wire protocol (spec/vault-protocol.md), shared
 * by clients and the vault. Isomorphic: WebCrypto only, no `node:*`.
 */
export { LABELS, type LabelName } from './labels.js';
export { formatScryptVerifier, parseScryptVerifier, scryptMaxmem, SCRYPT_VERIFIER_PARAMS, type ScryptVerifier } from './scrypt-verifier.js';
export { ProtocolError, DecodeError, DecryptionError, InvalidPeerKeyError, ClientUsageError, type DecodeErrorCode } from './errors.js';
export { Secret } from './secret.js';
export { ByteReader, ByteWriter, concat, equalBytes, toHex, fromHex, toBase64Url, fromBase64Url, isAscii, utf8, writePadded } from './bytes.js';
export { sha256, sha256IntoSync, hkdf, aesGcmSeal, aesGcmOpen, webRandom, webCryptoProvider, useCryptoProvider, cryptoProvider, type RandomSource, type CryptoProvider, type EphemeralKeyPair } from './primitives.js';
export {
  AEAD_AES_128_GCM,
  AEAD_AES_256_GCM,
  KEM_P256_HKDF_SHA256,
  KDF_HKDF_SHA256,
  P256_PUBLIC_KEY_LENGTH,
  HpkeContext,
  setupBaseSender,
  setupBaseRecipient,
  checkRecipientKey,
  type AeadId,
} from './hpke.js';
export { generateEphemeral } from './primitives.js';
export { DEFAULT_KSF, INSECURE_FAST_KSF_FOR_TESTING, KSF_ENCODED_LENGTH, encodeKsf, decodeKsf, ksfAtLeast, ksfEquals, ksfBytes, toSerenityKeyStretching, type KsfParams } from './ksf.js';
export {
  PROTOCOL_VERSION,
  BODY_SIZE,
  SIZES,
  OPERATIONS,
  OUTCOMES,
  INVALID_REASONS,
  operationCode,
  operationFromCode,
  encodeRequestBody,
  decodeRequestBody,
  encodeResponseBody,
  encodePaddedResponseBody,
  decodeResponseBody,
  pad,
  unpad,
  type Operation,
  type OutcomeName,
  type InvalidReason,
  type VaultRequest,
  type VaultResponse,
  type OkResponse,
  type OwnerProof,
} from './messages.js';
export {
  FLEET_KEY_ID_LENGTH,
  HPKE_SUITE_NAME,
  fleetKeyId,
  fleetKeyFromPublicKey,
  bundleToJson,
  parseFleetKeyBundle,
  type FleetKey,
  type FleetKeyBundle,
} from './fleet-key.js';
export {
  REQUEST_HEADER_LENGTH,
  REQUEST_LENGTH,
  RESPONSE_LENGTH,
  RESPONSE_NONCE_LENGTH,
  ACCOUNT_ID_PATTERN,
  checkAccountId,
  requestInfo,
  parseRequest,
  sealRequest,
  reusableEphemeral,
  openRequest,
  type RequestHeader,
  type SealedRequest,
  type OpenedRequest,
  type SealRequestOptions,
} from './envelope.js';
export { BACKUP_KEY_LENGTH, WRAPPED_BACKUP_KEY_LENGTH, OWNER_TOKEN_LENGTH, ownerToken, wrapBackupKey, unwrapBackupKey, sealRelease, openRelease } from './key-wrap.js';
export { VaultClient, UnexpectedResponseError, type VaultTransport, type VaultClientOptions, type RecoverResult, type RegisterResult, type StatusResult, type FlowFailure } from './client.js';
/**
 * The OPAQUE implementation both sides use (RFC 9807, ristretto255; Meta's opaque-ke
 * in WASM), re-exported so the vault pins the very same build as its clients; loaded
 * by the first `await opaque.ready` (opaque.ts).
 */
export { opaque } from './opaque.js';
export { POW_LABEL, leadingZeroBits } from './pow.js';
export { RELAY_AUTH_HEADER, RELAY_LINK_LABEL, RELAY_LINK_KEY_LENGTH, RELAY_LINK_MAX_SKEW_MS, relayLinkMac, relayAuthHeader, verifyRelayAuth, RelayLinkReplayCache, type RelayLinkRequest, type RelayAuthCheck } from './relay-link.js';
