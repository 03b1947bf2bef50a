import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { relayAuthHeader, verifyRelayAuth, RELAY_LINK_MAX_SKEW_MS } from '../src/index.js';

const key = new Uint8Array(32).map((_, i) => i);
const req = { method: 'POST', path: '/v1/request', account: 'local:abc', body: new Uint8Array([1, 2, 3]) };

test('relay link MAC matches the spec formula computed independently', async () => {
  const header = await relayAuthHeader(key, req, 1_700_000_000_123);
  const bodyHash = createHash('sha256').update(req.body).digest();
  const input = Buffer.concat([Buffer.from('coffer-relay-link/v1\0POST\0/v1/request\0local:abc\x001700000000123\0'), bodyHash]);
  const mac = createHmac('sha256', key).update(input).digest('hex');
  assert.equal(header, `v1,t=1700000000123,mac=${mac}`);
});

test('relay link verification: ok, stale, tampered, malformed, missing', async () => {
  const now = 1_700_000_000_000;
  const h = await relayAuthHeader(key, req, now);
  assert.equal(await verifyRelayAuth(key, h, req, now + RELAY_LINK_MAX_SKEW_MS - 1), 'ok');
  assert.equal(await verifyRelayAuth(key, h, req, now + RELAY_LINK_MAX_SKEW_MS + 1), 'stale');
  assert.equal(await verifyRelayAuth(key, h, { ...req, account: 'local:abd' }, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(key, h, { ...req, body: new Uint8Array([1, 2, 4]) }, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(new Uint8Array(32), h, req, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(key, h.replace('v1', 'v2'), req, now), 'malformed');
  assert.equal(await verifyRelayAuth(key, undefined, req, now), 'missing');
});
