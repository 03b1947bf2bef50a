// The vault's core promises, end to end through the HTTP app (app.inject), with real
// OPAQUE, HPKE, sealing and SQLite: spec/vault-protocol.md §5 and TESTING.md "Vault".
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_KSF, toHex } from '@coffer/protocol';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';

describe('registration and recovery', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policy: { guessLimit: 5 } });
  });
  after(() => h.close());

  it('registers a key and recovers exactly that key with the right password', async () => {
    const c = h.client('alice');
    assert.deepEqual(await c.register('correct horse', KEY_K), { outcome: 'ok' });
    const r = await c.recover('correct horse');
    assert.equal(r.outcome, 'ok');
    assert.ok(r.outcome === 'ok');
    assert.equal(toHex(r.backupKey.expose()), toHex(KEY_K));
    const s = await c.status(KEY_K);
    assert.deepEqual(s.outcome === 'ok' && [s.guessesRemaining, s.guessLimit], [5, 5]);
  });

  it('works with the default (production) argon2id parameters too', async () => {
    const c = h.client('default-ksf', { ksf: DEFAULT_KSF });
    assert.equal((await c.register('pw', KEY_K)).outcome, 'ok');
    const r = await c.recover('pw');
    assert.ok(r.outcome === 'ok');
    assert.equal(toHex(r.backupKey.expose()), toHex(KEY_K));
    const s = await c.status(KEY_K);
    assert.ok(s.outcome === 'ok');
    assert.deepEqual(s.ksf, DEFAULT_KSF, 'the record keeps the KSF parameters it was made with');
  });

  it('counts wrong passwords down to erasure; then the right password fails too', async () => {
    const c = h.client('bob');
    await c.register('right', KEY_K, { guessLimit: 3 });
    assert.deepEqual(await c.recover('wrong-1'), { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 2 });
    assert.deepEqual(await c.recover('wrong-2'), { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 1 });
    const erasedBefore = await h.metric('coffer_vault_records_erased_total');
    assert.deepEqual(await c.recover('wrong-3'), { outcome: 'locked', op: 'login-finish' });
    assert.equal(await h.metric('coffer_vault_records_erased_total'), erasedBefore + 1);
    assert.equal((await c.recover('right')).outcome, 'locked');
    assert.equal((await c.status(KEY_K)).outcome, 'locked');
  });

  it('a correct login resets the guess count', async () => {
    const c = h.client('carol');
    await c.register('pw', KEY_K);
    await c.recover('nope');
    await c.recover('nope');
    const s1 = await c.status(KEY_K);
    assert.equal(s1.outcome === 'ok' && s1.guessesRemaining, 3);
    assert.equal((await c.recover('pw')).outcome, 'ok');
    const s2 = await c.status(KEY_K);
    assert.equal(s2.outcome === 'ok' && s2.guessesRemaining, 5);
  });

  it('a guess is counted at KE2 even if the client never sends KE3', async () => {
    const c = h.client('dave');
    await c.register('pw', KEY_K);
    const r = await c.send({ op: 'login-start', timestampMs: Date.now(), ke1: new Uint8Array(96).fill(0) });
    // an invalid KE1 point gives no KE2 and counts nothing
    assert.equal(r.outcome, 'invalid');
    const { opaque, fromBase64Url } = await import('@coffer/protocol');
    await opaque.ready;
    const ke1 = fromBase64Url(opaque.client.startLogin({ password: 'guess' }).startLoginRequest);
    const r2 = await c.send({ op: 'login-start', timestampMs: Date.now(), ke1 });
    assert.equal(r2.outcome, 'ok');
    const s = await c.status(KEY_K);
    assert.equal(s.outcome === 'ok' && s.guessesRemaining, 4);
  });

  it('an unknown account gets no KE2 (no OPRF evaluation outside a registration), only not-registered', async () => {
    const c = h.client('nobody');
    const { opaque, fromBase64Url } = await import('@coffer/protocol');
    await opaque.ready;
    const ke1 = fromBase64Url(opaque.client.startLogin({ password: 'guess' }).startLoginRequest);
    const r = await c.send({ op: 'login-start', timestampMs: Date.now(), ke1 });
    assert.deepEqual(r, { outcome: 'not-registered', op: 'login-start' });
    assert.deepEqual(await c.recover('guess'), { outcome: 'not-registered', op: 'login-start' });
    assert.equal(await h.stored('nobody'), null, 'an unknown account leaves no record');
  });

  it('changes the password atomically: the old one stops working, the key stays', async () => {
    const c = h.client('erin');
    await c.register('old', KEY_K);
    const changed = await c.changePassword('old', 'new');
    assert.equal(changed.outcome, 'ok');
    assert.equal((await c.recover('old')).outcome, 'wrong-password');
    const r = await c.recover('new');
    assert.ok(r.outcome === 'ok');
    assert.equal(toHex(r.backupKey.expose()), toHex(KEY_K));
  });

  it('deletes the record; the account is then not registered', async () => {
    const c = h.client('frank');
    await c.register('pw', KEY_K);
    assert.deepEqual(await c.delete(null), { outcome: 'proof-required', op: 'delete' }, 'deleting needs proof');
    assert.ok(await h.stored('frank'));
    assert.deepEqual(await c.delete(new Uint8Array(32).fill(7)), { outcome: 'proof-required', op: 'delete' }, 'another key\'s token is no proof');
    assert.deepEqual(await c.delete(KEY_K), { outcome: 'ok' });
    // What may stay is the register-start rate window (no key material: the stored
    // record is no longer an active one).
    assert.equal((await c.status(KEY_K)).outcome, 'not-registered');
    assert.deepEqual(await c.delete(KEY_K), { outcome: 'not-registered', op: 'delete' });
    assert.equal((await c.register('again', KEY_K)).outcome, 'ok', 'password mode can be enabled again');
  });

  it('refuses a registration asking for more guesses than the deployment allows', async () => {
    const c = h.client('gina');
    await assert.rejects(c.register('pw', KEY_K, { guessLimit: 6 }), /bad-guess-limit/);
    assert.equal((await c.status(KEY_K)).outcome, 'not-registered');
  });
});
