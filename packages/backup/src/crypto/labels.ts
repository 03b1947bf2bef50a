/**
 * Every key-derivation label the backup engine uses, in one table (STYLE.md §6).
 * Labels are versioned: a new format version gets new labels, never reused ones.
 * `test/labels.test.ts` checks this table against a golden list, so a change here is
 * a format change and must come with spec/backup-format.md and new vectors.
 */
export const BackupLabel = {
  /** HKDF info for the repository-independent key ID (spec §3.2). */
  keyId: 'coffer/backup/v1/key-id',
  /** HKDF info for the key that MACs the repository config (spec §4). */
  configMac: 'coffer/backup/v1/config-mac',
  /** HKDF info for the master key from which every object key is derived (spec §5.2). */
  objectMaster: 'coffer/backup/v1/object-master',
  /** HKDF info prefix for one sealed object's key; the header follows it (spec §5.2). */
  objectKey: 'coffer/backup/v1/object-key',
  /** HKDF info for the HMAC key of chunk IDs (spec §6.2). */
  chunkId: 'coffer/backup/v1/chunk-id',
  /** HKDF info for the FastCDC gear table (spec §6.1). */
  gearTable: 'coffer/backup/v1/gear-table',
  /** HKDF info for the repository key ID, salt R (spec §3.2, format version 3). */
  repositoryKeyId: 'coffer/backup/v3/repository-key-id',
  /** HKDF info for the HMAC key of the config's key check (spec §4, format version 3). */
  keyCheck: 'coffer/backup/v3/key-check',
  /** HKDF info for the BLAKE3 key of chunk IDs (spec §6.2, format version 4). */
  chunkIdBlake3: 'coffer/backup/v4/chunk-id-blake3',
} as const;

export type BackupLabelName = keyof typeof BackupLabel;
