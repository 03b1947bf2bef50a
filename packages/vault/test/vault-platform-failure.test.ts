// An HSM that fails during the request's HPKE DH is the vault's failure (503
// `platform-failure`, retry safe, so the relay fails over), never the client's
// (400 `undecryptable`). Only a bad point stays `undecryptable`.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PlatformError } from '../src/core/platform.js';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { raw } from './helpers/raw-requests.js';

describe('platform failures during the request DH', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
    await h.client('alice').register('pw', KEY_K);
  });
  after(() => h.close());

  for (const code of ['hsm-failure', 'token-missing', 'key-missing'] as const) {
    it(`ecdh throwing PlatformError ${code} → 503 platform-failure, retry: true`, async () => {
      const request = (await raw(h, 'alice', { op: 'status' })).sealed.bytes;
      const platform = h.vault.platform.platform;
      const original = platform.ecdh;
      platform.ecdh = async () => {
        throw new PlatformError(`simulated ${code}`, code);
      };
      let res;
      try {
        res = await h.post('alice', request);
      } finally {
        platform.ecdh = original;
      }
      assert.equal(res.status, 503);
      const body = JSON.parse(res.body.toString()) as { error: { code: string; retry: boolean } };
      assert.equal(body.error.code, 'platform-failure');
      assert.equal(body.error.retry, true);
      // Once the platform is back, the vault answers again.
      assert.equal((await h.post('alice', (await raw(h, 'alice', { op: 'status' })).sealed.bytes)).status, 200);
    });
  }

  it('ecdh rejecting the point (bad-argument) is still 400 undecryptable', async () => {
    const request = Buffer.from((await raw(h, 'alice', { op: 'status' })).sealed.bytes);
    request[10 + 64]! ^= 1;
    const res = await h.post('alice', request);
    assert.equal(res.status, 400);
    assert.equal(res.json().error.code, 'undecryptable');
  });
});
