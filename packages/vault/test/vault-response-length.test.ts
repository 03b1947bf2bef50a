// Every answer has the same length whatever the outcome (spec §4.2), so the front end
// learns nothing from sizes.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { opaque, fromBase64Url, RESPONSE_LENGTH, VaultClient, INSECURE_FAST_KSF_FOR_TESTING } from '@coffer/protocol';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { freshKe1, raw } from './helpers/raw-requests.js';

describe('fixed response length', () => {
  let h: Harness;
  const seen = new Map<string, Set<number>>();
  before(async () => {
    h = await startHarness({ policy: { guessLimit: 2, loginsPerWindow: 3 } });
  });
  after(() => h.close());

  function client(account: string): VaultClient {
    return new VaultClient({
      fleetKey: h.vault.fleet.fleetKey,
      account,
      ksf: INSECURE_FAST_KSF_FOR_TESTING,
      transport: async (bytes) => {
        const res = await h.post(account, bytes);
        assert.equal(res.status, 200);
        const sizes = seen.get('all') ?? new Set();
        sizes.add(res.body.length);
        seen.set('all', sizes);
        return new Uint8Array(res.body);
      },
    });
  }

  it('is RESPONSE_LENGTH for every outcome: ok, wrong-password, locked, not-registered, stale, superseded, proof-required, already-registered, rate-limited and invalid', async () => {
    const outcomes = new Set<string>();
    const note = (r: { outcome: string }) => outcomes.add(r.outcome);
    const a = client('len-a');
    note(await a.status()); // not-registered
    note(await a.register('pw', KEY_K)); // ok
    note(await a.register('pw', KEY_K)); // already-registered
    note(await a.recover('pw')); // ok
    note(await a.recover('bad')); // wrong-password
    note(await a.recover('bad')); // locked
    note(await a.status()); // locked
    const b = client('len-b');
    await b.register('pw', KEY_K);
    for (let i = 0; i < 3; i++) await b.recover('pw');
    note(await b.recover('pw')); // rate-limited (3 logins per window)
    note(await b.send({ op: 'login-finish', nonce: new Uint8Array(16), ke3: null })); // stale
    note(await client('len-c').send({ op: 'login-start', timestampMs: Date.now(), ke1: new Uint8Array(96) })); // invalid
    await opaque.ready;
    note(await client('len-c').send({ op: 'login-start', timestampMs: Date.now(), ke1: fromBase64Url(opaque.client.startLogin({ password: 'x' }).startLoginRequest) })); // not-registered
    note(await client('len-c').delete(null)); // not-registered
    const d = client('len-e');
    await d.register('pw', KEY_K);
    note(await d.delete(null)); // proof-required
    note(await d.send({ op: 'login-start', timestampMs: Date.now(), ke1: new Uint8Array(96) })); // invalid
    const s1 = opaque.client.startLogin({ password: 'pw' });
    const first = await d.send({ op: 'login-start', timestampMs: Date.now(), ke1: fromBase64Url(s1.startLoginRequest) });
    await d.send({ op: 'login-start', timestampMs: Date.now(), ke1: fromBase64Url(opaque.client.startLogin({ password: 'pw' }).startLoginRequest) });
    assert.ok(first.outcome === 'ok' && first.op === 'login-start');
    note(await d.send({ op: 'login-finish', nonce: first.nonce, ke3: null })); // superseded
    assert.deepEqual([...outcomes].sort(), ['already-registered', 'invalid', 'locked', 'not-registered', 'ok', 'proof-required', 'rate-limited', 'stale', 'superseded', 'wrong-password']);
    assert.deepEqual([...seen.get('all')!], [RESPONSE_LENGTH]);
  });

  it('a raw replay answer has the same length as a fresh one', async () => {
    await client('len-d').register('pw', KEY_K);
    const x = await raw(h, 'len-d', { op: 'login-start', timestampMs: Date.now(), ke1: (await freshKe1('pw')).ke1 });
    const first = await x.send();
    const replay = await x.send();
    assert.equal(first.response?.outcome, 'ok');
    assert.equal(replay.response?.outcome, 'stale');
    assert.equal(first.bytes.length, replay.bytes.length);
  });
});
