// One HPKE ephemeral per recovery (spec §3.2): the login-finish is sealed with its
// login-start's ephemeral key, and the vault takes the DH it kept from the login-start
// instead of a second DH with the fleet key (an HSM call). It is only a cache: every
// answer is what it was, a client with a fresh ephemeral per request still recovers, and
// the front end, which sees both requests' `enc`, gains nothing from knowing it is shared.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fromBase64Url, generateEphemeral, opaque, reusableEphemeral, toBase64Url, toSerenityKeyStretching, type EphemeralKeyPair } from '@coffer/protocol';
import { DhReuse } from '../src/core/dh-reuse.js';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { raw } from './helpers/raw-requests.js';

/** Counts the fleet-key DHs the platform computes while `run` runs. */
async function countDhs<T>(h: Harness, run: () => Promise<T>): Promise<{ dhs: number; result: T }> {
  const platform = h.vault.platform.platform;
  const original = platform.ecdh;
  let dhs = 0;
  platform.ecdh = (label, peer) => {
    dhs += 1;
    return original.call(platform, label, peer);
  };
  try {
    const result = await run();
    return { dhs, result };
  } finally {
    platform.ecdh = original;
  }
}

/** A login by hand: login-start and login-finish sealed with the given ephemerals. */
async function login(h: Harness, account: string, password: string, startEph: EphemeralKeyPair, finishEph: EphemeralKeyPair) {
  await opaque.ready;
  const start = opaque.client.startLogin({ password });
  const r1 = (await (await raw(h, account, { op: 'login-start', timestampMs: Date.now(), ke1: fromBase64Url(start.startLoginRequest) }, undefined, startEph)).send()).response;
  assert.ok(r1?.outcome === 'ok' && r1.op === 'login-start', `login-start: ${r1?.outcome}`);
  const fin = opaque.client.finishLogin({ clientLoginState: start.clientLoginState, loginResponse: toBase64Url(r1.ke2), password, keyStretching: toSerenityKeyStretching(r1.ksf) });
  const finish = await raw(h, account, { op: 'login-finish', nonce: r1.nonce, ke3: fin ? fromBase64Url(fin.finishLoginRequest) : null }, undefined, finishEph);
  return { r1, finish };
}

describe('one ephemeral per recovery: the login-start DH serves its login-finish', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policy: { guessLimit: 5 } });
    for (const a of ['d1', 'd2', 'd3', 'd4', 'd5', 'd6']) await h.client(a).register('pw', KEY_K);
  });
  after(() => h.close());

  it('VaultClient.recover costs the platform one DH, and recovers K', async () => {
    const { dhs, result } = await countDhs(h, () => h.client('d1').recover('pw'));
    assert.equal(result.outcome, 'ok');
    assert.ok(result.outcome === 'ok' && Buffer.from(result.backupKey.expose()).equals(Buffer.from(KEY_K)));
    assert.equal(dhs, 1);
  });

  it('a wrong password is counted as before, with one DH', async () => {
    const { dhs, result } = await countDhs(h, () => h.client('d2').recover('wrong'));
    assert.deepEqual(result, { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 4 });
    assert.equal(dhs, 1);
  });

  it('a client with a fresh ephemeral per request (older clients) still recovers: two DHs', async () => {
    const { dhs, result } = await countDhs(h, async () => {
      const { finish } = await login(h, 'd3', 'pw', await generateEphemeral(), await generateEphemeral());
      return (await finish.send()).response;
    });
    assert.equal(result?.outcome, 'ok');
    assert.equal(dhs, 2);
  });

  it("the front end replays the login-start's enc in a login-finish of its own: undecryptable; the real one still opens", async () => {
    const eph = await reusableEphemeral();
    const { finish } = await login(h, 'd4', 'pw', eph, eph);
    const real = finish.sealed.bytes;
    // What the operator can build knowing enc but not the DH: the login-start's header and
    // ciphertext relabelled, and random ciphertext under the same enc.
    const forged = real.slice();
    forged.set(crypto.getRandomValues(new Uint8Array(forged.length - 75)), 75);
    const tries = await countDhs(h, async () => [(await h.post('d4', forged)).status, (await h.post('d5', real)).status]);
    assert.deepEqual(tries.result, [400, 400]);
    // The forgery for d4 took the kept DH (and failed); d5 has none kept for this enc.
    assert.equal(tries.dhs, 1);
    const { dhs, result } = await countDhs(h, async () => (await finish.send()).response);
    assert.equal(result?.outcome, 'ok');
    assert.equal(dhs, 1, 'the kept DH was spent on the forgery: the real login-finish computes it');
  });

  it('a kept DH serves only its own account and is taken once', async () => {
    const eph = await reusableEphemeral();
    const { finish } = await login(h, 'd5', 'pw', eph, eph);
    // The same ephemeral used for another account's request: computed, not taken.
    const other = await countDhs(h, async () => (await (await raw(h, 'd6', { op: 'status', proof: null }, undefined, eph)).send()).response);
    assert.equal(other.result?.outcome, 'ok');
    assert.equal(other.dhs, 1);
    const first = await countDhs(h, async () => (await finish.send()).response);
    assert.equal(first.result?.outcome, 'ok');
    assert.equal(first.dhs, 0);
    const replay = await countDhs(h, async () => (await finish.send()).response);
    assert.equal(replay.result?.outcome, 'stale');
    assert.equal(replay.dhs, 1);
  });

  it("a kept DH lives no longer than the login: after the login's lifetime it is computed again", async () => {
    const eph = await reusableEphemeral();
    const { finish } = await login(h, 'd6', 'pw', eph, eph);
    const platform = h.vault.platform.platform;
    const now = platform.now;
    platform.now = () => Date.now() + h.config.policy.loginTtlMs + 1;
    try {
      const { dhs, result } = await countDhs(h, async () => (await finish.send()).response);
      assert.equal(result?.outcome, 'stale');
      assert.equal(dhs, 1);
    } finally {
      platform.now = now;
    }
  });
});

describe('DhReuse', () => {
  const enc = (i: number): Uint8Array => new Uint8Array(65).fill(i);
  const dh = (i: number): Uint8Array => new Uint8Array(32).fill(i);

  it('gives a kept DH back once, to its account only, as a copy', () => {
    const c = new DhReuse(60_000);
    const d = dh(7);
    c.keep('a', enc(1), d, 0);
    d.fill(0);
    assert.equal(c.take('b', enc(1), 1), null);
    assert.equal(c.take('a', enc(2), 1), null);
    assert.deepEqual(c.take('a', enc(1), 1), dh(7));
    assert.equal(c.take('a', enc(1), 2), null);
    assert.equal(c.size, 0);
  });

  it('keeps encs that differ in one byte apart, whatever the byte (its key is the bytes themselves)', () => {
    const c = new DhReuse(60_000);
    const variants: Uint8Array[] = [];
    for (const at of [0, 1, 32, 64]) {
      for (const v of [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff]) {
        const e = enc(0x04);
        e[at] = v;
        if (!variants.some((x) => x.every((b, i) => b === e[i]))) variants.push(e);
      }
    }
    variants.forEach((e, i) => c.keep('a', e, dh(i), 0));
    assert.equal(c.size, variants.length);
    assert.equal(c.take('a\u0000', variants[0]!, 1), null, 'another account, even one that is a prefix');
    variants.forEach((e, i) => assert.deepEqual(c.take('a', e, 1), dh(i)));
    assert.equal(c.size, 0);
  });

  it('forgets entries at their expiry and beyond its bound, oldest first', () => {
    const c = new DhReuse(1_000, 3);
    for (let i = 1; i <= 4; i++) c.keep('a', enc(i), dh(i), i);
    assert.equal(c.size, 3);
    assert.equal(c.take('a', enc(1), 10), null, 'the oldest was dropped for the fourth');
    assert.deepEqual(c.take('a', enc(2), 10), dh(2));
    assert.equal(c.take('a', enc(3), 1_003), null, 'expired at 3 + 1000');
    assert.equal(c.size, 1);
    assert.deepEqual(c.take('a', enc(4), 1_003), dh(4));
  });
});
