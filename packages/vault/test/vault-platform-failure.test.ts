// An HSM that fails during the request's HPKE DH is the vault's failure (503
// `platform-failure`, retry safe, so the relay fails over), never the client's
// (400 `undecryptable`). Only a bad point stays `undecryptable`. Error bodies carry the
// catalogue's message only, never the HSM's or the store's details.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PlatformError } from '../src/core/platform.js';
import { ERRORS } from '../src/server/errors.js';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { raw } from './helpers/raw-requests.js';
import { closedPort } from './helpers/requirements.js';

describe('platform failures during the request DH', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
    await h.client('alice').register('pw', KEY_K);
  });
  after(() => h.close());

  for (const code of ['hsm-failure', 'token-missing', 'key-missing'] as const) {
    it(`ecdh throwing PlatformError ${code} → 503 platform-failure, retry: true`, async () => {
      const request = (await raw(h, 'alice', { op: 'status', proof: null })).sealed.bytes;
      const platform = h.vault.platform.platform;
      const original = platform.ecdh;
      platform.ecdh = async () => {
        throw new PlatformError(`simulated ${code} on slot 7 (CKR_DEVICE_ERROR)`, code);
      };
      let res;
      try {
        res = await h.post('alice', request);
      } finally {
        platform.ecdh = original;
      }
      assert.equal(res.status, 503);
      const body = JSON.parse(res.body.toString()) as { error: { code: string; message: string; retry: boolean } };
      assert.equal(body.error.code, 'platform-failure');
      assert.equal(body.error.retry, true);
      // The HSM's message is logged, never sent (S9).
      assert.equal(body.error.message, ERRORS['platform-failure'].message);
      assert.doesNotMatch(res.body.toString(), /simulated|slot 7|CKR_/);
      // Once the platform is back, the vault answers again.
      assert.equal((await h.post('alice', (await raw(h, 'alice', { op: 'status', proof: null })).sealed.bytes)).status, 200);
    });
  }

  it('a store failure is 503 store-unavailable; the etcd detail is logged, not sent (S9)', async () => {
    // A real EtcdRecordStore whose only endpoint refuses connections, and logging on: the
    // store's own error (endpoint URL, "connection refused") must reach the log, not the client.
    const logLines: string[] = [];
    const dead = `http://127.0.0.1:${await closedPort()}`;
    const e = await startHarness({ logLines, store: { kind: 'etcd', endpoints: [dead], prefix: 'coffer/vault/', timeoutMs: 1000 }, config: { groupSize: 1 } });
    let res;
    try {
      res = await e.post('alice', (await raw(e, 'alice', { op: 'status', proof: null })).sealed.bytes);
    } finally {
      await e.close();
    }
    assert.equal(res.status, 503);
    const body = JSON.parse(res.body.toString()) as { error: { code: string; message: string; retry: boolean } };
    assert.equal(body.error.code, 'store-unavailable');
    assert.equal(body.error.retry, true);
    assert.equal(body.error.message, ERRORS['store-unavailable'].message);
    assert.doesNotMatch(res.body.toString(), /127\.0\.0\.1|ECONNREFUSED|refused|etcd/);
    const logged = logLines.join('');
    assert.match(logged, /etcd unavailable/, 'the store error is logged');
    assert.ok(logged.includes(`${dead}: `), 'with the endpoint');
    assert.match(logged, /ECONNREFUSED|connection refused/, 'and what went wrong there');
  });

  it('ecdh rejecting the point (bad-argument) is still 400 undecryptable', async () => {
    const request = Buffer.from((await raw(h, 'alice', { op: 'status', proof: null })).sealed.bytes);
    request[10 + 64]! ^= 1;
    const res = await h.post('alice', request);
    assert.equal(res.status, 400);
    assert.equal(res.json().error.code, 'undecryptable');
  });
});
