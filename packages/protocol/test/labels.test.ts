// The domain-separation labels are frozen: this golden list must be edited on purpose,
// together with spec/vault-protocol.md §9, never by accident.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LABELS } from '../src/index.js';

const GOLDEN: Record<string, string> = {
  requestInfo: 'coffer/vault/v1/request',
  responseExport: 'coffer/vault/v1/response',
  responseKey: 'key',
  responseNonce: 'nonce',
  fleetKeyId: 'coffer/vault/v1/fleet-key-id',
  backupKeyWrap: 'coffer/vault/v1/backup-key-wrap',
  loginRelease: 'coffer/vault/v1/login-release',
  recordSeal: 'coffer/vault/v1/record',
  opaqueSetupSeal: 'coffer/vault/v1/opaque-server-setup',
  loginReplayDigest: 'coffer/vault/v1/login-replay',
  fleetNodeId: 'coffer/vault/v1/fleet-node-id',
  fleetTransfer: 'coffer/vault/v1/fleet-transfer',
  vaultOwnerToken: 'coffer/vault/v1/owner-token',
  credentialIdentifier: 'coffer/vault/v1/credential',
  relaySession: 'coffer-relay/v1/session',
};

test('the label table equals the golden list', () => {
  assert.deepEqual({ ...LABELS }, GOLDEN);
});

test('labels are distinct, ASCII, and no coffer label is a prefix of another', () => {
  const values = Object.values(LABELS) as string[];
  assert.equal(new Set(values).size, values.length);
  for (const v of values) assert.match(v, /^[\x21-\x7e]+$/);
  const coffer = values.filter((v) => v.startsWith('coffer/'));
  for (const a of coffer) for (const b of coffer) if (a !== b) assert.ok(!b.startsWith(a), `${a} is a prefix of ${b}`);
});
