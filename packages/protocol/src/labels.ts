/**
 * Every domain-separation label of the vault protocol, in one table.
 *
 * Labels are versioned ASCII strings; a change of meaning gets a new version, never a
 * reused string. `test/labels.test.ts` checks this table against a golden list, so an
 * accidental edit fails CI. See spec/vault-protocol.md §"Labels".
 */
export const LABELS = {
  /** HPKE `info` prefix for every client→vault request (RFC 9180 §5.1). */
  requestInfo: 'coffer/vault/v1/request',
  /** HPKE exporter context for the response secret (RFC 9458 §4.4 uses "message/bhttp response"). */
  responseExport: 'coffer/vault/v1/response',
  /** RFC 9458 §4.4 fixed Expand labels for the response AEAD key and nonce. */
  responseKey: 'key',
  responseNonce: 'nonce',
  /** Fleet key ID: first 8 bytes of SHA-256(label || 0x00 || public key). */
  fleetKeyId: 'coffer/vault/v1/fleet-key-id',
  /** Client: HKDF info for the key that wraps the backup key K under the OPAQUE export key. */
  backupKeyWrap: 'coffer/vault/v1/backup-key-wrap',
  /** Vault→client: HKDF info for the key (from the OPAQUE session key) that carries the wrapped K. */
  loginRelease: 'coffer/vault/v1/login-release',
  /** AAD prefix of a sealed account record at rest. */
  recordSeal: 'coffer/vault/v1/record',
  /** AAD of the sealed OPAQUE server setup (OPRF seed + server AKE key) in fleet.json. */
  opaqueSetupSeal: 'coffer/vault/v1/opaque-server-setup',
  /** Digest of a login request's HPKE `enc`, remembered to refuse replayed KE1s. */
  loginReplayDigest: 'coffer/vault/v1/login-replay',
  /** Fleet ceremony: a node's ID, first 8 bytes of SHA-256(label || 0x00 || transport public key). */
  fleetNodeId: 'coffer/vault/v1/fleet-node-id',
  /** Fleet ceremony: HKDF info and AAD prefix of the fleet keys wrapped to a joining node. */
  fleetTransfer: 'coffer/vault/v1/fleet-transfer',
  /**
   * Client: HKDF info for the vault owner token, derived from K (spec §5.5). The vault
   * keeps SHA-256(token) with the record and deletes it only for the token (or a fresh
   * login's grant), so the front end cannot erase records at will.
   */
  vaultOwnerToken: 'coffer/vault/v1/owner-token',
  /** Core: the OPAQUE credential identifier of one registration, label || 0x00 || account || 0x00 || registration ID (spec §5.1). */
  credentialIdentifier: 'coffer/vault/v1/credential',
  /** Relay (spec/relay-api.md §1): what a device key signs to open a session, label || 0x00 || challenge. */
  relaySession: 'coffer-relay/v1/session',
} as const;

export type LabelName = keyof typeof LABELS;
