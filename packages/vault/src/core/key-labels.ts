/**
 * Labels of the HSM-resident keys the vault uses (how a PKCS#11 token finds them, and
 * the names in the software platform's key file). Versioned: a new key is a new label.
 */
export const KEY_LABELS = {
  /** P-256 key pair: the fleet's HPKE key. `Platform.ecdh` does the KEM's DH with it. */
  fleetHpke: 'coffer-fleet-hpke-v1',
  /** AES-256 key that seals account records and the OPAQUE server setup at rest. */
  recordSeal: 'coffer-record-seal-v1',
  /**
   * P-256 key pair of one node's HSM (never shared): the fleet's keys are handed to a
   * joining node wrapped to it (`coffer-vault fleet export-for`). Its public key is the
   * node's identity in the key ceremony.
   */
  nodeTransport: 'coffer-node-transport-v1',
  /**
   * HMAC-SHA256 secret shared by the fleet: MACs the rollback-protection log's entries
   * and the nodes' capture statements (spec §13). Transferred in the key ceremony.
   */
  logMac: 'coffer-log-mac-v1',
} as const;

/** Label of the record-sealing key made by the n-th rotation (n ≥ 2): `coffer-record-seal-v1-r2`, … */
export function rotatedRecordSealLabel(n: number): string {
  return `${KEY_LABELS.recordSeal}-r${n}`;
}

/**
 * Domain-separation labels of the rollback-protection log (spec/vault-protocol.md §13).
 * Vault-internal (no client computes them), so they live here rather than in the
 * protocol package's LABELS table.
 */
export const LOG_LABELS = {
  /** Input of an entry's MAC: label ‖ 0x00 ‖ group ‖ index ‖ prevMac ‖ root. */
  entry: 'coffer/vault/v1/log-entry',
  /** Which bucket of the record tree an account falls in. */
  bucket: 'coffer/vault/v1/log-bucket',
  /** A group member's statement that it captured an entry (fleet). */
  ack: 'coffer/vault/v1/log-ack',
  /** A member's answer to a fresh challenge: what it has captured, bound to the challenge (fleet takeover and rejoin). */
  challenge: 'coffer/vault/v1/log-challenge',
  /** The group's member list (a record under a reserved name, spec §13.11): label ‖ 0x00 ‖ u8 n ‖ n × node ID (8 bytes). */
  members: 'coffer/vault/v1/group-members',
} as const;
