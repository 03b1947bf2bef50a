// Issue 8 §1: the front end's operator (who holds the relay link key and so can send any
// request for any account) must not be able to collect OPRF evaluations outside a
// registration and use them, with one counted login, to test a dictionary offline.
//
// The attack, played end to end against a real vault:
//  1. harvest: for each dictionary word, a blinded element sent through every path that
//     evaluates the OPRF without counting a guess (register-start; login-start on an
//     account without an active record), turned into the masking key the word would give
//     (the client's own finishRegistration does that part);
//  2. the victim registers (or registers again) with a password that is in the dictionary;
//  3. ONE counted login-start yields KE2 = evaluation ‖ masking nonce ‖ masked response ‖ …;
//  4. offline: a word is the password iff its masking key unmasks the server's public key
//     (RFC 9807 §6.3.2.2: masked_response = pad(masking_key, nonce) XOR (server_pk ‖ envelope)).
// With per-registration OPRF keys the harvested evaluations are under keys no record will
// ever use, so step 4 finds nothing. The test also checks the attack's own mechanics, so
// it cannot pass by harvesting nothing.
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { concat, fromBase64Url, INSECURE_FAST_KSF_FOR_TESTING, opaque, toBase64Url, toSerenityKeyStretching, utf8, type KsfParams } from '@coffer/protocol';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { freshKe1, raw } from './helpers/raw-requests.js';

const PASSWORD = 'correct horse battery staple';
const DICTIONARY = [PASSWORD, 'password1', 'letmein', 'hunter2', 'dragon', 'qwerty123', 'trustno1', 'sunshine'];

function hkdfExpandSha512(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const out: Buffer[] = [];
  let t = Buffer.alloc(0);
  for (let i = 1; out.reduce((n, b) => n + b.length, 0) < length; i++) {
    t = createHmac('sha512', prk).update(t).update(info).update(Buffer.from([i])).digest();
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, length);
}

interface Harvested {
  readonly word: string;
  /** The masking key this word gives under the harvested evaluation. */
  readonly maskingKey: Uint8Array;
  /** The raw evaluation, to compare with a counted one. */
  readonly evaluation: Uint8Array;
  readonly blinded: Uint8Array;
  readonly path: 'register-start' | 'login-start';
}

/** Every uncounted OPRF evaluation the operator can get for `word` on `account`. */
async function harvestWord(h: Harness, account: string, word: string, ksf: KsfParams): Promise<Harvested[]> {
  await opaque.ready;
  const out: Harvested[] = [];
  // Path 1: register-start (no record, a pending one, or an erased one).
  const reg = opaque.client.startRegistration({ password: word });
  const blinded = fromBase64Url(reg.registrationRequest);
  const r1 = (await (await raw(h, account, { op: 'register-start', grant: null, registrationRequest: blinded })).send()).response;
  let serverPk: Uint8Array | null = null;
  if (r1?.outcome === 'ok' && r1.op === 'register-start') {
    serverPk = r1.registrationResponse.subarray(32, 64);
    const fin = opaque.client.finishRegistration({ password: word, clientRegistrationState: reg.clientRegistrationState, registrationResponse: toBase64Url(r1.registrationResponse), keyStretching: toSerenityKeyStretching(ksf) });
    out.push({ word, maskingKey: fromBase64Url(fin.registrationRecord).subarray(32, 96), evaluation: r1.registrationResponse.subarray(0, 32), blinded, path: 'register-start' });
  }
  // Path 2: login-start where there is no active record (the old fake-record path): the
  // same blinded element in a KE1 (the rest of the KE1 from a real one).
  const other = await freshKe1('x');
  const ke1 = concat(blinded, other.ke1.subarray(32));
  const r2 = (await (await raw(h, account, { op: 'login-start', timestampMs: Date.now(), ke1 })).send()).response;
  if (r2?.outcome === 'ok' && r2.op === 'login-start' && serverPk) {
    const response = concat(r2.ke2.subarray(0, 32), serverPk);
    const fin = opaque.client.finishRegistration({ password: word, clientRegistrationState: reg.clientRegistrationState, registrationResponse: toBase64Url(response), keyStretching: toSerenityKeyStretching(ksf) });
    out.push({ word, maskingKey: fromBase64Url(fin.registrationRecord).subarray(32, 96), evaluation: r2.ke2.subarray(0, 32), blinded, path: 'login-start' });
  }
  return out;
}

/** One counted login-start, then the offline search. Returns the words that match. */
async function countedLoginAndSearch(h: Harness, account: string, harvested: readonly Harvested[], serverPk: Uint8Array): Promise<{ found: string[]; counted: boolean; sameEvaluation: boolean }> {
  const probe = harvested.find((x) => x.word === PASSWORD);
  // The counted KE1 carries the blinded element harvested for the real password, so a
  // key that did not change would give the very same evaluation.
  const other = await freshKe1('y');
  const ke1 = probe ? concat(probe.blinded, other.ke1.subarray(32)) : other.ke1;
  const r = (await (await raw(h, account, { op: 'login-start', timestampMs: Date.now(), ke1 })).send()).response;
  if (r?.outcome !== 'ok' || r.op !== 'login-start') return { found: [], counted: false, sameEvaluation: false };
  const maskingNonce = r.ke2.subarray(32, 64);
  const masked = r.ke2.subarray(64, 96);
  const found = new Set<string>();
  for (const x of harvested) {
    const pad = hkdfExpandSha512(x.maskingKey, concat(maskingNonce, utf8('CredentialResponsePad')), 128);
    if (pad.subarray(0, 32).every((b, i) => (b ^ masked[i]!) === serverPk[i])) found.add(x.word);
  }
  const sameEvaluation = probe ? harvested.some((x) => x.word === PASSWORD && Buffer.compare(Buffer.from(x.evaluation), Buffer.from(r.ke2.subarray(0, 32))) === 0) : false;
  return { found: [...found], counted: true, sameEvaluation };
}

describe('the operator cannot turn uncounted OPRF evaluations into an offline attack', () => {
  let h: Harness;
  const ksf = INSECURE_FAST_KSF_FOR_TESTING;
  before(async () => {
    // register-start's per-account limit is lifted here, so the harvest is as large as the
    // attacker likes: the defence under test is the per-registration key, not the limit
    // (vault-registration-limits.test.ts tests that).
    h = await startHarness({ policy: { guessLimit: 10, registerStartsPerWindow: 64 } });
  });
  after(() => h.close());

  async function serverPublicKey(): Promise<Uint8Array> {
    const reg = opaque.client.startRegistration({ password: 'probe' });
    const r = (await (await raw(h, `pk-${randomBytes(4).toString('hex')}`, { op: 'register-start', grant: null, registrationRequest: fromBase64Url(reg.registrationRequest) })).send()).response;
    assert.ok(r?.outcome === 'ok' && r.op === 'register-start');
    return r.registrationResponse.subarray(32, 64);
  }

  async function harvest(account: string): Promise<Harvested[]> {
    const all: Harvested[] = [];
    for (const w of DICTIONARY) all.push(...(await harvestWord(h, account, w, ksf)));
    // The attack's material exists: the real password's blinded element was evaluated.
    assert.ok(all.some((x) => x.word === PASSWORD), 'the harvest obtained no evaluation for the real password');
    return all;
  }

  it('the offline check itself works: a masking key from a real registration finds the password', async () => {
    // Control: if the operator did hold the record's own evaluation, the search succeeds.
    // This proves the search below would see a hit, so "found nothing" means something.
    await opaque.ready;
    const reg = opaque.client.startRegistration({ password: PASSWORD });
    const account = 'oracle-control';
    const r1 = (await (await raw(h, account, { op: 'register-start', grant: null, registrationRequest: fromBase64Url(reg.registrationRequest) })).send()).response;
    assert.ok(r1?.outcome === 'ok' && r1.op === 'register-start');
    const fin = opaque.client.finishRegistration({ password: PASSWORD, clientRegistrationState: reg.clientRegistrationState, registrationResponse: toBase64Url(r1.registrationResponse), keyStretching: toSerenityKeyStretching(ksf) });
    const record = fromBase64Url(fin.registrationRecord);
    const done = (await (await raw(h, account, { op: 'register-finish', nonce: r1.nonce, registrationRecord: record, ksf, guessLimit: 0, wrappedKey: new Uint8Array(60), ownerTokenHash: new Uint8Array(32) })).send()).response;
    assert.equal(done?.outcome, 'ok');
    const harvested: Harvested[] = [{ word: PASSWORD, maskingKey: record.subarray(32, 96), evaluation: r1.registrationResponse.subarray(0, 32), blinded: fromBase64Url(reg.registrationRequest), path: 'register-start' }];
    const { found, counted } = await countedLoginAndSearch(h, account, harvested, r1.registrationResponse.subarray(32, 64));
    assert.ok(counted);
    assert.deepEqual(found, [PASSWORD]);
  });

  it('variant 1: harvested before the victim registers → nothing found', async () => {
    const account = 'victim-before';
    const serverPk = await serverPublicKey();
    const harvested = await harvest(account);
    await h.client(account, { ksf }).register(PASSWORD, KEY_K).then((r) => assert.equal(r.outcome, 'ok'));
    const { found, counted, sameEvaluation } = await countedLoginAndSearch(h, account, harvested, serverPk);
    assert.ok(counted, 'the one counted login-start was answered');
    assert.equal(sameEvaluation, false, 'a harvested evaluation equals the registered record\'s');
    assert.deepEqual(found, []);
  });

  it('variant 2: harvested after the victim deleted the record, before registering again → nothing found', async () => {
    const account = 'victim-deleted';
    const serverPk = await serverPublicKey();
    const victim = h.client(account, { ksf });
    assert.equal((await victim.register(PASSWORD, KEY_K)).outcome, 'ok');
    // The operator cannot delete it (that needs proof: see vault-delete-proof.test.ts);
    // the victim disables password backups with the key it holds.
    assert.equal((await victim.delete(KEY_K)).outcome, 'ok');
    const harvested = await harvest(account);
    assert.equal((await victim.register(PASSWORD, KEY_K)).outcome, 'ok');
    const { found, counted, sameEvaluation } = await countedLoginAndSearch(h, account, harvested, serverPk);
    assert.ok(counted);
    assert.equal(sameEvaluation, false);
    assert.deepEqual(found, []);
  });

  it('variant 3: harvested after the record was erased (guesses used up), before registering again → nothing found', async () => {
    const account = 'victim-erased';
    const serverPk = await serverPublicKey();
    const victim = h.client(account, { ksf });
    assert.equal((await victim.register(PASSWORD, KEY_K)).outcome, 'ok');
    for (let i = 0; i < 10; i++) await victim.recover(`wrong ${i}`);
    assert.equal((await victim.status()).outcome, 'locked');
    const harvested = await harvest(account);
    assert.equal((await victim.register(PASSWORD, KEY_K)).outcome, 'ok');
    const { found, counted, sameEvaluation } = await countedLoginAndSearch(h, account, harvested, serverPk);
    assert.ok(counted);
    assert.equal(sameEvaluation, false);
    assert.deepEqual(found, []);
  });
});
