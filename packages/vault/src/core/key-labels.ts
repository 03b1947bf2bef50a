/**
 * Labels of the HSM-resident keys the vault uses (how a PKCS#11 token finds them, and
 * the names in the software platform's key file). Versioned: a new key is a new label.
 */
export const KEY_LABELS = {
  /** P-256 key pair: the fleet's HPKE key. `Platform.ecdh` does the KEM's DH with it. */
  fleetHpke: 'coffer-fleet-hpke-v1',
  /** AES-256 key that seals account records and the OPAQUE server setup at rest. */
  recordSeal: 'coffer-record-seal-v1',
} as const;
