import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { cryptoProvider, relayAuthHeader, relayLinkMac, useCryptoProvider, verifyRelayAuth, webCryptoProvider, RelayLinkReplayCache, RELAY_LINK_MAX_SKEW_MS } from '../src/index.js';
import { nodeCryptoProvider } from '../src/node/node-crypto.js';

const key = new Uint8Array(32).map((_, i) => i);
const req = { method: 'POST', path: '/v1/request', account: 'local:abc', body: new Uint8Array([1, 2, 3]) };

test('relay link MAC matches the spec formula computed independently', async () => {
  const header = await relayAuthHeader(key, req, 1_700_000_000_123, (n) => new Uint8Array(n).fill(0xab));
  const bodyHash = createHash('sha256').update(req.body).digest();
  const nonce = 'ab'.repeat(16);
  const input = Buffer.concat([Buffer.from(`coffer-relay-link/v2\0POST\0/v1/request\0local:abc\x001700000000123\0${nonce}\0`), bodyHash]);
  const mac = createHmac('sha256', key).update(input).digest('hex');
  assert.equal(header, `v2,t=1700000000123,n=${nonce},mac=${mac}`);
});

test('relay link verification: ok, stale, tampered, malformed, missing', async () => {
  const now = 1_700_000_000_000;
  const h = await relayAuthHeader(key, req, now);
  assert.equal(await verifyRelayAuth(key, h, req, now + RELAY_LINK_MAX_SKEW_MS - 1), 'ok');
  assert.equal(await verifyRelayAuth(key, h, req, now + RELAY_LINK_MAX_SKEW_MS + 1), 'stale');
  assert.equal(await verifyRelayAuth(key, h, { ...req, account: 'local:abd' }, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(key, h, { ...req, body: new Uint8Array([1, 2, 4]) }, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(new Uint8Array(32), h, req, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(key, h.replace('v2', 'v1'), req, now), 'malformed');
  assert.equal(await verifyRelayAuth(key, h.replace(/,n=[0-9a-f]+/, ''), req, now), 'malformed');
  assert.equal(await verifyRelayAuth(key, h.replace(/n=([0-9a-f])/, (_m, c: string) => `n=${c === '0' ? '1' : '0'}`), req, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(key, undefined, req, now), 'missing');
});

test('relay link replay: a nonce is accepted once inside the window', async () => {
  const now = 1_700_000_000_000;
  const cache = new RelayLinkReplayCache();
  const h = await relayAuthHeader(key, req, now);
  assert.equal(await verifyRelayAuth(key, h, req, now, cache), 'ok');
  assert.equal(await verifyRelayAuth(key, h, req, now + 1000, cache), 'replayed');
  assert.equal(await verifyRelayAuth(key, h, req, now + RELAY_LINK_MAX_SKEW_MS + 1, cache), 'stale');
  const other = await relayAuthHeader(key, req, now);
  assert.notEqual(other, h, 'every header has its own nonce');
  assert.equal(await verifyRelayAuth(key, other, req, now, cache), 'ok');
  // A forged header (bad MAC) never reaches the cache.
  const forged = other.replace(/n=[0-9a-f]{32}/, `n=${'0'.repeat(32)}`);
  assert.equal(await verifyRelayAuth(key, forged, req, now, cache), 'bad-mac');
  assert.equal(cache.size, 2);
});

test('relay link replay cache: when full it refuses rather than forgets early', () => {
  const cache = new RelayLinkReplayCache(2);
  assert.ok(cache.admit('a', 100, 0));
  assert.ok(cache.admit('b', 100, 0));
  assert.equal(cache.admit('c', 100, 50), false);
  assert.ok(cache.admit('c', 200, 101), 'expired entries make room');
});

test('relay link MAC with either provider is the formula over separately encoded fields (non-ASCII, lone surrogates at the fields\' edges)', async () => {
  const before = cryptoProvider();
  const fields = ['POST', '/v1/request', 'local:abc', 'é/ü', '\ud800', 'a\udc00', '\ud83d', '\ude00b', '😀', ''];
  try {
    for (const provider of [webCryptoProvider, nodeCryptoProvider]) {
      useCryptoProvider(provider);
      for (let i = 0; i < fields.length; i++) {
        const r = { method: fields[i]!, path: fields[(i + 4) % fields.length]!, account: fields[(i + 5) % fields.length]!, body: new Uint8Array(i * 50).fill(i) };
        const parts = [Buffer.from('coffer-relay-link/v2'), ...[r.method, r.path, r.account, '1700000000123', 'cd'.repeat(16)].flatMap((f) => [Buffer.from([0]), Buffer.from(f, 'utf8')]), Buffer.from([0]), createHash('sha256').update(r.body).digest()];
        const want = createHmac('sha256', key).update(Buffer.concat(parts)).digest('hex');
        assert.equal(Buffer.from(await relayLinkMac(key, r, '1700000000123', 'cd'.repeat(16))).toString('hex'), want, `${provider.name}, fields ${i}`);
      }
    }
  } finally {
    useCryptoProvider(before);
  }
});
