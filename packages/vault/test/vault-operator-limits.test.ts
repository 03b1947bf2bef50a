// Issue 8: what the front end's operator (holding the relay link key, so able to send any
// request for any account) can no longer do: delete a record without proof, run
// register-start without limit, slip past the login rate limit with old timestamps, or
// configure a KSF floor below the default.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_KSF, fromBase64Url, INSECURE_FAST_KSF_FOR_TESTING, opaque, toHex } from '@coffer/protocol';
import { checkPolicy, DEFAULT_POLICY } from '../src/core/config.js';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { freshKe1, raw } from './helpers/raw-requests.js';

async function registerStart(h: Harness, account: string): Promise<string | undefined> {
  await opaque.ready;
  const reg = opaque.client.startRegistration({ password: 'x' });
  return (await (await raw(h, account, { op: 'register-start', grant: null, registrationRequest: fromBase64Url(reg.registrationRequest) })).send()).response?.outcome;
}

describe('deleting a record needs proof', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('the operator cannot delete an active record: no proof, a made-up grant, a made-up token, another K\'s token', async () => {
    const victim = h.client('del-a');
    assert.equal((await victim.register('pw', KEY_K)).outcome, 'ok');
    const before = toHex((await h.stored('del-a'))!);
    const attempts = [
      { op: 'delete' as const, timestampMs: Date.now(), proof: null },
      { op: 'delete' as const, timestampMs: Date.now(), proof: { kind: 'grant' as const, grant: randomBytes(16) } },
      { op: 'delete' as const, timestampMs: Date.now(), proof: { kind: 'token' as const, token: randomBytes(32) } },
    ];
    for (const req of attempts) assert.equal((await (await raw(h, 'del-a', req)).send()).response?.outcome, 'proof-required');
    assert.equal((await victim.delete(new Uint8Array(32).fill(9))).outcome, 'proof-required');
    assert.equal(toHex((await h.stored('del-a'))!), before, 'the record is untouched');
    assert.equal((await victim.status()).outcome, 'ok');
  });

  it('K\'s owner token deletes it; so does the grant of a login that just succeeded, but not an expired one', async () => {
    const a = h.client('del-b');
    assert.equal((await a.register('pw', KEY_K)).outcome, 'ok');
    assert.equal((await a.delete(KEY_K)).outcome, 'ok');
    assert.equal((await a.status()).outcome, 'not-registered');

    const b = h.client('del-c');
    assert.equal((await b.register('pw', KEY_K)).outcome, 'ok');
    const rec = await b.recover('pw');
    assert.ok(rec.outcome === 'ok');
    // An expired grant: the vault's clock past the grant TTL.
    const platform = h.vault.platform.platform;
    const realNow = platform.now;
    platform.now = () => Date.now() + h.config.policy.grantTtlMs + 1;
    try {
      const later = h.client('del-c', { now: () => Date.now() + h.config.policy.grantTtlMs + 1 });
      assert.equal((await later.delete({ grant: rec.grant })).outcome, 'proof-required');
    } finally {
      platform.now = realNow;
    }
    assert.equal((await b.delete({ grant: rec.grant })).outcome, 'ok');
    assert.equal((await b.status()).outcome, 'not-registered');
  });
});

describe('register-start is limited per account', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policy: { registerStartsPerWindow: 3 } });
  });
  after(() => h.close());

  it('after the window\'s starts, rate-limited; neither a delete nor the pending registration\'s expiry resets it', async () => {
    for (let i = 0; i < 3; i++) assert.equal(await registerStart(h, 'reg-a'), 'ok');
    assert.equal(await registerStart(h, 'reg-a'), 'rate-limited');
    // Deleting the pending registration (needs no proof: it holds nothing) keeps the window.
    assert.equal((await (await raw(h, 'reg-a', { op: 'delete', timestampMs: Date.now(), proof: null })).send()).response?.outcome, 'ok');
    assert.equal(await registerStart(h, 'reg-a'), 'rate-limited');
    const platform = h.vault.platform.platform;
    const realNow = platform.now;
    try {
      platform.now = () => Date.now() + h.config.policy.registrationTtlMs + 1; // the pending registration expired
      assert.equal(await registerStart(h, 'reg-a'), 'rate-limited');
      platform.now = () => Date.now() + h.config.policy.registerWindowMs + 1; // the window passed
      assert.equal(await registerStart(h, 'reg-a'), 'ok');
    } finally {
      platform.now = realNow;
    }
    // Another account is not affected.
    assert.equal(await registerStart(h, 'reg-b'), 'ok');
  });
});

describe('the login rate limit runs on the vault\'s clock', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policy: { loginsPerWindow: 3 } });
  });
  after(() => h.close());

  it('login-starts stamped at the edge of the freshness window still count for a whole window', async () => {
    assert.equal((await h.client('rl-a').register('pw', KEY_K)).outcome, 'ok');
    const w = h.config.policy.freshnessWindowMs;
    const old = () => Date.now() - w + 2_000;
    for (let i = 0; i < 3; i++) {
      const r = (await (await raw(h, 'rl-a', { op: 'login-start', timestampMs: old(), ke1: (await freshKe1('g')).ke1 })).send()).response;
      assert.equal(r?.outcome, 'ok');
    }
    // 5 s later on the vault's clock: entries expiring at the client's timestamp + W
    // would be gone, and the limit would never bite.
    const platform = h.vault.platform.platform;
    const realNow = platform.now;
    platform.now = () => Date.now() + 5_000;
    try {
      const r = (await (await raw(h, 'rl-a', { op: 'login-start', timestampMs: Date.now() + 5_000, ke1: (await freshKe1('g')).ke1 })).send()).response;
      assert.equal(r?.outcome, 'rate-limited');
    } finally {
      platform.now = realNow;
    }
  });
});

describe('the KSF floor', () => {
  it('a policy below the default floor, or malformed, is refused at start-up', () => {
    assert.throws(() => checkPolicy({ ...DEFAULT_POLICY, minimumKsf: INSECURE_FAST_KSF_FOR_TESTING }), /minimumKsf: .* below the default floor/);
    assert.throws(() => checkPolicy({ ...DEFAULT_POLICY, minimumKsf: { ...DEFAULT_KSF, memoryKiB: DEFAULT_KSF.memoryKiB - 1 } }), /below the default floor/);
    assert.throws(() => checkPolicy({ ...DEFAULT_POLICY, minimumKsf: { ...DEFAULT_KSF, iterations: 1 } }), /below the default floor/);
    assert.throws(() => checkPolicy({ ...DEFAULT_POLICY, minimumKsf: { memoryKiB: '65536' } as never }), /minimumKsf: must be/);
    assert.doesNotThrow(() => checkPolicy({ ...DEFAULT_POLICY, minimumKsf: { ...DEFAULT_KSF, memoryKiB: 2 * DEFAULT_KSF.memoryKiB } }));
    assert.doesNotThrow(() => checkPolicy({ ...DEFAULT_POLICY, minimumKsf: INSECURE_FAST_KSF_FOR_TESTING, insecureAllowWeakKsfForTesting: true }));
  });
});

describe('a captured delete cannot be replayed', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('replayed after the user registered again with the same K, it is stale and deletes nothing', async () => {
    const { ownerToken } = await import('@coffer/protocol');
    const c = h.client('replay-del');
    assert.equal((await c.register('pw', KEY_K)).outcome, 'ok');
    const captured = await raw(h, 'replay-del', { op: 'delete', timestampMs: Date.now(), proof: { kind: 'token', token: await ownerToken(KEY_K, 'replay-del') } });
    assert.equal((await captured.send()).response?.outcome, 'ok');
    await new Promise((r) => setTimeout(r, 5));
    assert.equal((await c.register('pw', KEY_K)).outcome, 'ok');
    const before = toHex((await h.stored('replay-del'))!);
    assert.equal((await captured.send()).response?.outcome, 'stale');
    assert.equal(toHex((await h.stored('replay-del'))!), before);
    assert.equal((await c.status()).outcome, 'ok');
  });
});

describe('status tells the guesses left only to the owner', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('the front end, asking status before and after a user\'s login, cannot tell a right password from a wrong one', async () => {
    const user = h.client('st-a');
    assert.equal((await user.register('pw', KEY_K)).outcome, 'ok');
    assert.equal((await user.recover('wrong')).outcome, 'wrong-password');
    const operator = async () => (await (await raw(h, 'st-a', { op: 'status', proof: null })).send()).response;
    const before = await operator();
    assert.deepEqual(before && before.outcome === 'ok' && before.op === 'status' ? before.guessesRemaining : 'x', null);
    assert.equal((await user.recover('pw')).outcome, 'ok'); // resets the count
    assert.deepEqual(await operator(), before, 'the same answer after a right login');
    assert.equal((await user.recover('wrong again')).outcome, 'wrong-password');
    assert.deepEqual(await operator(), before, 'and after a wrong one');
    // The owner (K's token) sees the count.
    const owned = await user.status(KEY_K);
    assert.ok(owned.outcome === 'ok' && owned.guessesRemaining === 9);
    const notOwner = await user.status(new Uint8Array(32).fill(3));
    assert.ok(notOwner.outcome === 'ok' && notOwner.guessesRemaining === null);
  });
});

describe('the store\'s reader learns nothing from record sizes', () => {
  it('every stored record has one size: after a right login, a wrong one, a registration, an erasure; the largest record fits', async () => {
    const { encodeRecord, RECORD_PADDED_SIZE } = await import('../src/core/record.js');
    const h = await startHarness({ policy: { guessLimit: 3 } });
    try {
      const sizes = new Set<number>();
      const note = async () => sizes.add((await h.stored('sz'))!.length);
      const c = h.client('sz');
      assert.equal((await c.register('pw', KEY_K)).outcome, 'ok');
      await note();
      await c.recover('pw');
      await note();
      await c.recover('wrong');
      await note();
      for (let i = 0; i < 3; i++) await c.recover('wrong');
      assert.equal((await c.status()).outcome, 'locked');
      await note();
      assert.equal(sizes.size, 1, `sizes seen: ${[...sizes].join(', ')}`);
      const big = encodeRecord({
        state: 'active', guessLimit: 255, guessesUsed: 0, ksf: DEFAULT_KSF, registrationRecord: new Uint8Array(192), registrationId: new Uint8Array(32), ownerTokenHash: new Uint8Array(32), registeredAt: 1,
        registerStarts: new Array(64).fill(1), wrappedKey: new Uint8Array(128),
        pendingLogin: { nonce: new Uint8Array(16), expiresAt: 1, serverLoginState: new Uint8Array(256) },
        pendingRegistration: { nonce: new Uint8Array(16), expiresAt: 1, registrationId: new Uint8Array(32) },
        changeGrant: { nonce: new Uint8Array(16), expiresAt: 1 },
        seenLogins: new Array(64).fill({ digest: new Uint8Array(16), expiresAt: 1 }),
      });
      assert.ok(big.length <= RECORD_PADDED_SIZE - 2, `largest record ${big.length} bytes`);
    } finally {
      await h.close();
    }
  });
});
