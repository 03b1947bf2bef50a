// The relay's link MAC (link-signer.ts) is @coffer/protocol's relayAuthHeader byte for
// byte: the same header for the same key, account, body, time and nonce, and one that
// verifyRelayAuth (what the vault runs) accepts — and refuses once anything changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { REQUEST_LENGTH, relayAuthHeader, verifyRelayAuth } from '@coffer/protocol';
import { installNodeCrypto } from '@coffer/protocol/node';
import { LinkSigner } from '../src/link-signer.js';
import { VAULT_PATH } from '../src/vault-forwarder.js';

installNodeCrypto();

for (const oneShot of [true, false]) test(`the same header as relayAuthHeader for the same time and nonce, for short, long and non-ASCII accounts (${oneShot ? 'crypto.hash' : 'createHash/createHmac'})`, async () => {
  const key = randomBytes(32);
  const accounts = ['local:abc', `app:${'x'.repeat(120)}`, `app:${'é'.repeat(700)}`, ''];
  for (const account of accounts) {
    for (const body of [randomBytes(REQUEST_LENGTH), Buffer.alloc(0), randomBytes(5000)]) {
      const nonce = randomBytes(16);
      const signer = oneShot ? new LinkSigner(key, 'POST', VAULT_PATH, () => nonce.toString('hex')) : new LinkSigner(key, 'POST', VAULT_PATH, () => nonce.toString('hex'), null);
      const now = 1_764_000_000_123.7;
      const expected = await relayAuthHeader(key, { method: 'POST', path: VAULT_PATH, account, body }, now, () => new Uint8Array(nonce));
      assert.equal(signer.header(account, body, now), expected);
      // Twice in a row (the signer reuses its buffers): still the same.
      assert.equal(signer.header(account, body, now), expected);
    }
  }
});

test('verifyRelayAuth accepts the header, and refuses it under another key, account, body or path', async () => {
  const key = randomBytes(32);
  const signer = new LinkSigner(key, 'POST', VAULT_PATH);
  const body = randomBytes(REQUEST_LENGTH);
  const now = Date.now();
  // A long account first: the next, short one must not see its leftovers.
  signer.header(`app:${'z'.repeat(2000)}`, body, now);
  const h = signer.header('local:acct', body, now);
  const req = { method: 'POST', path: VAULT_PATH, account: 'local:acct', body };
  assert.equal(await verifyRelayAuth(key, h, req, now), 'ok');
  assert.equal(await verifyRelayAuth(randomBytes(32), h, req, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(key, h, { ...req, account: 'local:other' }, now), 'bad-mac');
  const other = Buffer.from(body);
  other[0]! ^= 1;
  assert.equal(await verifyRelayAuth(key, h, { ...req, body: other }, now), 'bad-mac');
  assert.equal(await verifyRelayAuth(key, h, { ...req, path: '/v1/other' }, now), 'bad-mac');
  // Two headers never share a nonce.
  assert.notEqual(/n=([0-9a-f]{32})/.exec(signer.header('local:acct', body, now))![1], /n=([0-9a-f]{32})/.exec(h)![1]);
});

test('a key that is not 32 bytes is refused at construction', () => {
  assert.throws(() => new LinkSigner(randomBytes(31), 'POST', VAULT_PATH), RangeError);
});
