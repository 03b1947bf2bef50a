/** The label table is part of the format (spec §3): a change here breaks every repository. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BackupLabel } from '../src/crypto/labels.js';

const GOLDEN = {
  keyId: 'coffer/backup/v1/key-id',
  configMac: 'coffer/backup/v1/config-mac',
  objectMaster: 'coffer/backup/v1/object-master',
  objectKey: 'coffer/backup/v1/object-key',
  chunkId: 'coffer/backup/v1/chunk-id',
  gearTable: 'coffer/backup/v1/gear-table',
  repositoryKeyId: 'coffer/backup/v3/repository-key-id',
  keyCheck: 'coffer/backup/v3/key-check',
  chunkIdBlake3: 'coffer/backup/v4/chunk-id-blake3',
};

test('every label matches the golden list exactly', () => {
  assert.deepEqual({ ...BackupLabel }, GOLDEN);
});

test('labels are distinct, ASCII, versioned, and none is a prefix of another', () => {
  const all = Object.values(BackupLabel) as string[];
  assert.equal(new Set(all).size, all.length);
  for (const l of all) {
    assert.match(l, /^coffer\/backup\/v[134]\/[a-z0-9-]+$/);
    for (const m of all) if (m !== l) assert.ok(!m.startsWith(l), `${l} is a prefix of ${m}`);
  }
});
