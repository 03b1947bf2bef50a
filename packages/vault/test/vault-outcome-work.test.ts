// A right password must not take the vault longer than a wrong one: the front end (and
// whoever holds the relay link key) times the vault's answers, and the answers are sealed
// and padded to one size precisely so that it cannot tell outcomes apart. So every
// login-finish verifies a KE3 (an abandoning client's is a fixed one that fails), seals a
// release (a wrong guess under a throwaway key) and draws the same random bytes.
import assert from 'node:assert/strict';
import { after, before, describe, it, mock } from 'node:test';
import { fromBase64Url, generateEphemeral, opaque, toBase64Url, toSerenityKeyStretching } from '@coffer/protocol';
import { nodeCryptoProvider } from '@coffer/protocol/node';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { raw } from './helpers/raw-requests.js';

describe('every login-finish outcome does the same work', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policy: { guessLimit: 10 } });
    await h.client('w1').register('pw', KEY_K);
  });
  after(() => h.close());

  /** One login with `password`; the login-finish carries what `ke3` makes of the client's KE3. */
  async function finishWork(password: string, ke3: (real: Uint8Array | null) => Uint8Array | null) {
    await opaque.ready;
    const start = opaque.client.startLogin({ password });
    const eph = await generateEphemeral();
    const r1 = (await (await raw(h, 'w1', { op: 'login-start', timestampMs: Date.now(), ke1: fromBase64Url(start.startLoginRequest) }, undefined, eph)).send()).response;
    assert.ok(r1?.outcome === 'ok' && r1.op === 'login-start', `login-start: ${r1?.outcome}`);
    const fin = opaque.client.finishLogin({ clientLoginState: start.clientLoginState, loginResponse: toBase64Url(r1.ke2), password, keyStretching: toSerenityKeyStretching(r1.ksf) });
    const finish = await raw(h, 'w1', { op: 'login-finish', nonce: r1.nonce, ke3: ke3(fin ? fromBase64Url(fin.finishLoginRequest) : null) }, undefined, eph);
    const platform = h.vault.platform.platform;
    const draws: number[] = [];
    const original = platform.randomBytes.bind(platform);
    const random = mock.method(platform, 'randomBytes', (n: number) => {
      draws.push(n);
      return original(n);
    });
    // The AES-GCM seals of the vault's process (the response's, and the release's): the
    // vault runs on node's provider (installNodeCrypto), which this process shares.
    const seals = mock.method(nodeCryptoProvider, 'aesGcmSeal');
    try {
      const outcome = (await finish.send()).response?.outcome;
      return { outcome, seals: seals.mock.callCount(), draws };
    } finally {
      random.mock.restore();
      seals.mock.restore();
    }
  }

  // (That each verifies one KE3 is not observable here: the OPAQUE module's functions are
  // frozen. vault-core.ts #loginFinish verifies ABANDONED_KE3 for an abandoning client.)
  it('right password, wrong password (the client abandons), forged KE3: the same seals and random draws each', async () => {
    const right = await finishWork('pw', (k) => k);
    const abandoned = await finishWork('wrong', (k) => k);
    const forged = await finishWork('pw', () => crypto.getRandomValues(new Uint8Array(64)));
    assert.equal(right.outcome, 'ok');
    assert.equal(abandoned.outcome, 'wrong-password');
    assert.equal(forged.outcome, 'wrong-password');
    assert.ok(right.seals >= 2, `the response and the release are sealed: ${right.seals}`);
    assert.equal(abandoned.seals, right.seals);
    assert.equal(forged.seals, right.seals);
    assert.deepEqual(abandoned.draws, right.draws);
    assert.deepEqual(forged.draws, right.draws);
  });
});
