// Replays and retries must not buy guesses or reopen finished logins (spec §5.6).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_KSF, fromBase64Url, INSECURE_FAST_KSF_FOR_TESTING, opaque, toBase64Url, toHex, toSerenityKeyStretching, VaultClient } from '@coffer/protocol';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { freshKe1, raw } from './helpers/raw-requests.js';

async function remaining(h: Harness, account: string): Promise<number | string | null> {
  const s = await h.client(account).status(KEY_K);
  return s.outcome === 'ok' ? s.guessesRemaining : s.outcome;
}

/** A transport that remembers every request it carried, like a malicious front end. */
function recordingClient(h: Harness, account: string, log: Uint8Array[]): VaultClient {
  return new VaultClient({
    fleetKey: h.vault.fleet.fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      log.push(bytes);
      const res = await h.post(account, bytes);
      return new Uint8Array(res.body);
    },
  });
}

describe('replays and retries', () => {
  let h: Harness;
  before(async () => {
    // The default login TTL (60 s): no round trip here comes near it, even on a loaded
    // machine; the expiry test moves the vault's clock instead of sleeping.
    h = await startHarness({ policy: { guessLimit: 5 } });
  });
  after(() => h.close());

  it('a replayed KE1 is refused as stale and counts no guess', async () => {
    await h.client('r1').register('pw', KEY_K);
    const { ke1 } = await freshKe1('guess');
    const x = await raw(h, 'r1', { op: 'login-start', timestampMs: Date.now(), ke1 });
    assert.equal((await x.send()).response?.outcome, 'ok');
    assert.equal(await remaining(h, 'r1'), 4);
    assert.equal((await x.send()).response?.outcome, 'stale');
    assert.equal(await remaining(h, 'r1'), 4);
  });

  it('a KE1 whose timestamp is outside the freshness window is stale and counts nothing', async () => {
    const { ke1 } = await freshKe1('guess');
    const x = await raw(h, 'r1', { op: 'login-start', timestampMs: Date.now() - 3_600_000, ke1 });
    assert.equal((await x.send()).response?.outcome, 'stale');
    assert.equal(await remaining(h, 'r1'), 4);
  });

  it('a replayed KE3 after a successful login is refused and releases nothing', async () => {
    await h.client('r2').register('pw', KEY_K);
    await opaque.ready;
    const start = opaque.client.startLogin({ password: 'pw' });
    const r1 = (await (await raw(h, 'r2', { op: 'login-start', timestampMs: Date.now(), ke1: fromBase64Url(start.startLoginRequest) })).send()).response;
    assert.ok(r1?.outcome === 'ok' && r1.op === 'login-start');
    const fin = opaque.client.finishLogin({ clientLoginState: start.clientLoginState, loginResponse: toBase64Url(r1.ke2), password: 'pw', keyStretching: toSerenityKeyStretching(r1.ksf) });
    assert.ok(fin);
    const ke3 = await raw(h, 'r2', { op: 'login-finish', nonce: r1.nonce, ke3: fromBase64Url(fin.finishLoginRequest) });
    assert.equal((await ke3.send()).response?.outcome, 'ok');
    // The exact captured bytes, and a fresh envelope around the same KE3: both refused.
    assert.equal((await ke3.send()).response?.outcome, 'stale');
    const again = await raw(h, 'r2', { op: 'login-finish', nonce: r1.nonce, ke3: fromBase64Url(fin.finishLoginRequest) });
    assert.equal((await again.send()).response?.outcome, 'stale');
    assert.equal(await remaining(h, 'r2'), 5);
  });

  it('an older login cannot be finished once a newer one started, and is told it was superseded', async () => {
    const a = await freshKe1('pw');
    const b = await freshKe1('pw');
    const ra = (await (await raw(h, 'r2', { op: 'login-start', timestampMs: Date.now(), ke1: a.ke1 })).send()).response;
    const rb = (await (await raw(h, 'r2', { op: 'login-start', timestampMs: Date.now(), ke1: b.ke1 })).send()).response;
    assert.ok(ra?.outcome === 'ok' && ra.op === 'login-start' && rb?.outcome === 'ok');
    const fin = opaque.client.finishLogin({ clientLoginState: a.state, loginResponse: toBase64Url(ra.ke2), password: 'pw', keyStretching: toSerenityKeyStretching(ra.ksf) });
    assert.ok(fin);
    assert.equal((await (await raw(h, 'r2', { op: 'login-finish', nonce: ra.nonce, ke3: fromBase64Url(fin.finishLoginRequest) })).send()).response?.outcome, 'superseded');
  });

  it('an expired login state is refused', async () => {
    const a = await freshKe1('pw');
    const ra = (await (await raw(h, 'r2', { op: 'login-start', timestampMs: Date.now(), ke1: a.ke1 })).send()).response;
    assert.ok(ra?.outcome === 'ok' && ra.op === 'login-start');
    const fin = opaque.client.finishLogin({ clientLoginState: a.state, loginResponse: toBase64Url(ra.ke2), password: 'pw', keyStretching: toSerenityKeyStretching(ra.ksf) });
    assert.ok(fin);
    // The injected clock (Platform.now, the core's only clock): just past the login TTL.
    const platform = h.vault.platform.platform;
    const realNow = platform.now;
    platform.now = () => Date.now() + h.config.policy.loginTtlMs + 1;
    try {
      assert.equal((await (await raw(h, 'r2', { op: 'login-finish', nonce: ra.nonce, ke3: fromBase64Url(fin.finishLoginRequest) })).send()).response?.outcome, 'stale');
    } finally {
      platform.now = realNow;
    }
  });

  it('a replayed registration cannot reset the guess counter', async () => {
    const log: Uint8Array[] = [];
    const c = recordingClient(h, 'r3', log);
    assert.equal((await c.register('pw', KEY_K)).outcome, 'ok');
    const [regStart, regFinish] = log;
    assert.ok(regStart && regFinish);
    await c.recover('wrong');
    await c.recover('wrong');
    assert.equal(await remaining(h, 'r3'), 3);
    const before = toHex((await h.stored('r3'))!);
    assert.equal((await h.post('r3', regStart)).status, 200);
    assert.equal((await h.post('r3', regFinish)).status, 200);
    assert.equal(await remaining(h, 'r3'), 3, 'the counter did not move');
    // The start replay is refused (already registered) without any write.
    assert.equal(toHex((await h.stored('r3'))!), before);
  });

  it('a registration retried by the client while a record exists is refused, not reset', async () => {
    const c = h.client('r3');
    assert.deepEqual(await c.register('pw', KEY_K), { outcome: 'already-registered', op: 'register-start' });
    assert.equal(await remaining(h, 'r3'), 3);
  });

  it('after erasure, the old registration messages cannot bring the record back', async () => {
    const log: Uint8Array[] = [];
    const c = recordingClient(h, 'r4', log);
    await c.register('pw', KEY_K, { guessLimit: 1 });
    const [, regFinish] = log;
    assert.equal((await c.recover('wrong')).outcome, 'locked');
    assert.equal((await h.post('r4', regFinish!)).status, 200);
    assert.equal(await remaining(h, 'r4'), 'locked');
    assert.equal((await c.recover('pw')).outcome, 'locked');
  });

  it('a register-start with a made-up change grant is refused', async () => {
    await h.client('r5').register('pw', KEY_K);
    const x = await raw(h, 'r5', { op: 'register-start', grant: new Uint8Array(16).fill(7), registrationRequest: fromBase64Url(opaque.client.startRegistration({ password: 'evil' }).registrationRequest) });
    assert.equal((await x.send()).response?.outcome, 'stale');
    assert.equal((await h.client('r5').recover('pw')).outcome, 'ok');
  });

  it('refuses weak KSF parameters unless the deployment allows them for testing', async () => {
    const strict = await startHarness({ policy: { insecureAllowWeakKsfForTesting: false } });
    try {
      await assert.rejects(strict.client('k1').register('pw', KEY_K), /weak-ksf/);
      assert.equal((await strict.client('k1').status(KEY_K)).outcome, 'not-registered');
      assert.equal((await strict.client('k2', { ksf: DEFAULT_KSF }).register('pw', KEY_K)).outcome, 'ok');
    } finally {
      await strict.close();
    }
  });
});
