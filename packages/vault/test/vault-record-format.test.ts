// Records written by the previous version (record format 1: no registration ID, the bare
// account as OPAQUE credential identifier, no owner token) still open and recover after
// the upgrade; every write is format 2; the next registration moves the record to a
// per-registration OPRF key (spec/vault-protocol.md §5, §7).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ByteWriter, encodeKsf, fromBase64Url, INSECURE_FAST_KSF_FOR_TESTING, opaque, toHex, toSerenityKeyStretching, wrapBackupKey } from '@coffer/protocol';
import { KEY_LABELS } from '../src/core/key-labels.js';
import { recordAad, unsealRecord } from '../src/core/record.js';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';

/** A format-1 active record for `password`, registered the old way (credential identifier = account). */
async function legacyRecord(h: Harness, account: string, password: string): Promise<Uint8Array> {
  await opaque.ready;
  const ksf = INSECURE_FAST_KSF_FOR_TESTING;
  const start = opaque.client.startRegistration({ password });
  const { registrationResponse } = opaque.server.createRegistrationResponse({ serverSetup: h.vault.fleet.opaqueSetup.expose(), userIdentifier: account, registrationRequest: start.registrationRequest });
  const fin = opaque.client.finishRegistration({ password, clientRegistrationState: start.clientRegistrationState, registrationResponse, keyStretching: toSerenityKeyStretching(ksf) });
  const wrapped = await wrapBackupKey(fromBase64Url(fin.exportKey), account, KEY_K);
  // Format 1, active: limit, used, ksf, registration record, vec16(wrapped), no pending
  // login / registration / grant, no seen logins.
  const w = new ByteWriter().u8(2).u8(10).u8(0);
  encodeKsf(w, ksf);
  const plain = w.bytes(fromBase64Url(fin.registrationRecord)).vec16(wrapped).u8(0).u8(0).u8(0).u8(0).finish();
  const sealed = await h.vault.platform.platform.seal(KEY_LABELS.recordSeal, recordAad(account, 1), plain);
  const out = new Uint8Array(1 + sealed.length);
  out[0] = 1;
  out.set(sealed, 1);
  return out;
}

describe('record format 1 after the upgrade', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('recovers K with the password it was registered with; writes format 2; a password change moves it to a per-registration key', async () => {
    const account = 'legacy-1';
    // Written as the upgrade found it: through the log when rollback protection is on
    // (a record the log does not hold would be refused as rolled back).
    const legacy = await legacyRecord(h, account, 'old password');
    if (h.vault.committer) await h.vault.committer.commit([{ account, value: legacy }]);
    else assert.ok((await h.vault.store.compareAndPut(account, legacy, null)).ok);
    const c = h.client(account);
    // No owner token was registered in format 1: K proves nothing; the count is shown
    // only with a fresh grant.
    const s = await c.status(KEY_K);
    assert.ok(s.outcome === 'ok' && s.guessesRemaining === null);
    assert.equal((await c.recover('wrong')).outcome, 'wrong-password');
    const r = await c.recover('old password');
    assert.ok(r.outcome === 'ok');
    const withGrant = await c.status({ grant: r.grant });
    assert.ok(withGrant.outcome === 'ok' && withGrant.guessesRemaining === 10);
    assert.equal(toHex(r.backupKey.expose()), toHex(KEY_K));
    const stored = (await h.stored(account))!;
    assert.equal(stored[0], 2, 'rewritten as format 2');
    const rec = await unsealRecord(h.vault.platform.platform, account, stored);
    assert.ok(rec.state === 'active' && rec.registrationId === null && rec.ownerTokenHash === null);
    // Only a grant deletes it (no owner token was registered): K's token is refused.
    assert.equal((await c.delete(KEY_K)).outcome, 'proof-required');
    const changed = await c.changePassword('old password', 'new password');
    assert.equal(changed.outcome, 'ok');
    const after = await unsealRecord(h.vault.platform.platform, account, (await h.stored(account))!);
    assert.ok(after.state === 'active' && after.registrationId?.length === 32 && after.ownerTokenHash?.length === 32);
    assert.equal((await c.recover('new password')).outcome, 'ok');
    assert.equal((await c.delete(KEY_K)).outcome, 'ok');
  });
});
