// Account passwords of built-in accounts (spec/relay-api.md §1): create with a password,
// sign in with it, the same 401 for every failure, rate limits, scrypt parameters stored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { gatedKdf, hashPassword, KDF_LANES, SCRYPT_PARAMS, scryptKdf, verifyPassword, type PasswordKdf } from '../src/auth/password.js';
import { keyProof, solvePow, newDeviceKey, signChallenge, startRelay, tempDir, testConfig } from './helpers.js';

const PW = 'correct horse battery';
const code = (r: { json: <T>() => T }) => r.json<{ error: { code: string } }>().error.code;

test('account password: create with one, sign in with it on a device with no key, add that device key, change it', async (t) => {
  const dir = tempDir(t);
  const r = await startRelay(t, testConfig(dir));
  const first = newDeviceKey();
  const created = await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: first.publicKey, password: PW } });
  assert.equal(created.statusCode, 201);
  const account = created.json<{ account: string }>().account;

  const s = await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account, password: PW } });
  assert.equal(s.statusCode, 200);
  const { token, expiresAt } = s.json<{ token: string; expiresAt: number }>();
  assert.match(token, /^cs1\./);
  assert.ok(expiresAt > Date.now());
  const auth = { authorization: `Bearer ${token}` };
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs', headers: auth })).statusCode, 200);
  // The new device registers its own key with that session.
  // A session alone cannot: it proves the account password it just used.
  assert.equal(code(await r.inject({ method: 'POST', url: '/v1/accounts/keys', headers: auth, payload: { publicKey: newDeviceKey().publicKey } })), 'proof-required');
  assert.equal((await r.inject({ method: 'POST', url: '/v1/accounts/keys', headers: auth, payload: { publicKey: newDeviceKey().publicKey, currentPassword: PW } })).statusCode, 201);

  // Change it: the old one stops working, the new one works.
  const NEW = 'another fine passphrase';
  assert.equal((await r.inject({ method: 'PUT', url: '/v1/accounts/password', headers: auth, payload: { password: NEW, currentPassword: PW } })).statusCode, 204);
  assert.equal(code(await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account, password: PW } })), 'invalid-credentials');
  assert.equal((await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account, password: NEW } })).statusCode, 200);
  // Setting it needs a session.
  assert.equal(code(await r.inject({ method: 'PUT', url: '/v1/accounts/password', payload: { password: NEW, currentPassword: PW } })), 'unauthenticated');

  // Stored as scrypt with its parameters (N=2^15, r=8, p=1, 16-byte salt), never in the clear.
  await r.relay.close();
  const db = new Database(join(dir, 'relay.db'), { readonly: true });
  t.after(() => db.close());
  const row = db.prepare<[string], { hash: string }>('SELECT hash FROM account_passwords WHERE account = ?').get(account)!;
  const m = /^scrypt\$32768\$8\$1\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(row.hash);
  assert.ok(m, row.hash);
  assert.equal(Buffer.from(m[1]!, 'base64url').length, 16);
  assert.equal(Buffer.from(m[2]!, 'base64url').length, 32);
  assert.ok(!row.hash.includes(NEW));
});

test('account password: wrong password, unknown account, account without a password are the same 401 after the same work', async (t) => {
  // The work is counted through an injected KDF (no wall-clock timing in tests).
  const calls: number[] = [];
  const kdf: PasswordKdf = async (password, salt, keylen, o) => {
    calls.push(o.N!);
    return scryptKdf(password, salt, keylen, o);
  };
  const r = await startRelay(t, testConfig(tempDir(t)), { passwordKdf: kdf });
  const withPw = (await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: newDeviceKey().publicKey, password: PW } })).json<{ account: string }>().account;
  const noPw = (await r.signUp()).account;
  const answers: Array<{ status: number; body: string; kdfCalls: number[] }> = [];
  for (const [account, password] of [[withPw, 'wrong password!'], ['z'.repeat(26), PW], [noPw, PW], [withPw, PW.toUpperCase()]] as const) {
    calls.length = 0;
    const res = await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account, password } });
    answers.push({ status: res.statusCode, body: res.body, kdfCalls: [...calls] });
  }
  for (const a of answers) {
    assert.equal(a.status, 401);
    assert.equal(a.body, answers[0]!.body);
    // Exactly one scrypt at the stored cost for every refusal, the unknown account included.
    assert.deepEqual(a.kdfCalls, [SCRYPT_PARAMS.N]);
  }
  // Malformed input is 400; a short password is refused at creation with weak-password.
  assert.equal(code(await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account: withPw } })), 'bad-request');
  assert.equal(code(await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account: 'short', password: PW } })), 'bad-request');
  const short = await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: newDeviceKey().publicKey, password: 'short' } });
  assert.equal(short.statusCode, 400);
  assert.equal(code(short), 'weak-password');
  assert.equal(code(await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: newDeviceKey().publicKey, password: 12345678901 } })), 'bad-request');
});

test('a stolen session cannot change the account password or add a device key; a password change ends other sessions', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const owner = await r.signUp();
  const stolen = owner.auth(); // the attacker's copy of the bearer token
  const attackerKey = newDeviceKey();
  const NEW = 'attacker chosen passphrase';
  // No proof, a wrong password, a signature by a key the account does not hold: refused.
  assert.equal(code(await r.inject({ method: 'PUT', url: '/v1/accounts/password', headers: stolen, payload: { password: NEW } })), 'proof-required');
  assert.equal(code(await r.inject({ method: 'POST', url: '/v1/accounts/keys', headers: stolen, payload: { publicKey: attackerKey.publicKey } })), 'proof-required');
  assert.equal(code(await r.inject({ method: 'PUT', url: '/v1/accounts/password', headers: stolen, payload: { password: NEW, currentPassword: 'no password is set' } })), 'invalid-credentials');
  const forged = await keyProof(r.inject, owner.account, attackerKey.key);
  assert.equal(code(await r.inject({ method: 'POST', url: '/v1/accounts/keys', headers: stolen, payload: { publicKey: attackerKey.publicKey, ...forged } })), 'invalid-credentials');
  // A proof's challenge is single use.
  const proof = await owner.proof();
  assert.equal((await r.inject({ method: 'PUT', url: '/v1/accounts/password', headers: owner.auth(), payload: { password: PW, ...proof } })).statusCode, 204);
  assert.equal(code(await r.inject({ method: 'PUT', url: '/v1/accounts/password', headers: owner.auth(), payload: { password: NEW, ...proof } })), 'invalid-credentials');
  // The owner changes the password from a second session: the first session ends.
  const second = (await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account: owner.account, password: PW } })).json<{ token: string }>().token;
  const secondAuth = { authorization: `Bearer ${second}` };
  assert.equal((await r.inject({ method: 'PUT', url: '/v1/accounts/password', headers: secondAuth, payload: { password: NEW, currentPassword: PW } })).statusCode, 204);
  assert.equal(code(await r.inject({ method: 'GET', url: '/v1/blobs', headers: stolen })), 'unauthenticated');
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs', headers: secondAuth })).statusCode, 200);
});

test('account password sign-in is rate-limited per account and per address', async (t) => {
  const dir = tempDir(t);
  const base = testConfig(dir);
  const r = await startRelay(t, { ...base, limits: { ...base.limits, passwordSignInByAccount: { perSecond: 0.001, burst: 3 }, signInByAddress: { perSecond: 0.001, burst: 6 } } });
  const account = (await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: newDeviceKey().publicKey, password: PW } })).json<{ account: string }>().account;
  const attempt = (password: string, acct = account, ip = '10.0.0.1') => r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: ip, payload: { account: acct, password } });
  for (let i = 0; i < 3; i++) assert.equal(code(await attempt(`wrong guess ${i}xx`)), 'invalid-credentials');
  // Beyond the per-account limit every attempt, the right one too, needs a proof-of-work
  // (not a lockout): 428 with the puzzle.
  const limited = await attempt(PW);
  assert.equal(limited.statusCode, 428, 'beyond the account limit: a proof-of-work, not a lockout');
  assert.equal(code(limited), 'proof-of-work-required');
  const pow = limited.json<{ error: { pow: { challenge: string; bits: number } } }>().error.pow;
  assert.ok(pow.bits >= 16);
  // Per account: another address is asked for one all the same.
  assert.equal((await attempt(PW, account, '10.0.0.2')).statusCode, 428);
  // Per address: the first address has 3 sign-in tokens left, spent on other accounts, then refused.
  assert.equal((await attempt(PW, 'b'.repeat(26))).statusCode, 401);
  assert.equal((await attempt(PW, 'c'.repeat(26))).statusCode, 401);
  assert.equal((await attempt(PW, 'd'.repeat(26))).statusCode, 429);
});

test('failed password attempts count per (account, address) and per account; the owner signs in from another address, and right answers cost nothing', async (t) => {
  const base = testConfig(tempDir(t));
  const limits = { ...base.limits, passwordSignInByAccountAddress: { perSecond: 0.001, burst: 2 }, passwordSignInByAccount: { perSecond: 0.001, burst: 5 } };
  const r = await startRelay(t, { ...base, limits });
  const account = (await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: newDeviceKey().publicKey, password: PW } })).json<{ account: string }>().account;
  const attempt = (password: string, ip: string) => r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: ip, payload: { account, password } });
  // The attacker locks out its own address…
  assert.equal((await attempt('wrong guess 1xx', '10.0.0.66')).statusCode, 401);
  assert.equal((await attempt('wrong guess 2xx', '10.0.0.66')).statusCode, 401);
  assert.equal((await attempt(PW, '10.0.0.66')).statusCode, 429);
  // …not the owner's; and the owner's right answers are free (more than the caps).
  for (let i = 0; i < 6; i++) assert.equal((await attempt(PW, '10.0.0.1')).statusCode, 200, `owner sign-in ${i}`);
  // The per-account cap counts failures from every address: once spent, everyone waits.
  assert.equal((await attempt('wrong guess 3xx', '10.0.0.67')).statusCode, 401);
  assert.equal((await attempt('wrong guess 4xx', '10.0.0.68')).statusCode, 401);
  assert.equal((await attempt('wrong guess 5xx', '10.0.0.68')).statusCode, 401);
  // Then the right password is not refused: it costs the owner a proof-of-work.
  const asked = await attempt(PW, '10.0.0.1');
  assert.equal(asked.statusCode, 428);
  const pow = solvePow(asked.json<{ error: { pow: { challenge: string; bits: number } } }>().error.pow);
  const solved = await r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: '10.0.0.1', payload: { account, password: PW, pow } });
  assert.equal(solved.statusCode, 200);
  // A puzzle is single use.
  assert.equal((await r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: '10.0.0.1', payload: { account, password: PW, pow } })).statusCode, 428);
});

test('device-key sign-in: a third party cannot spend the owner\'s limits with challenges or bad signatures', async (t) => {
  const base = testConfig(tempDir(t));
  const limits = { ...base.limits, signInByAccountAddress: { perSecond: 0.001, burst: 2 }, signInByAccount: { perSecond: 0.001, burst: 4 } };
  const r = await startRelay(t, { ...base, limits });
  const owner = await r.signUp();
  const stranger = newDeviceKey();
  const signIn = async (key: typeof stranger.key, ip: string) => {
    const { challenge } = (await r.inject({ method: 'POST', url: '/v1/sessions/challenge', remoteAddress: ip, payload: { account: owner.account } })).json<{ challenge: string }>();
    return (await r.inject({ method: 'POST', url: '/v1/sessions', remoteAddress: ip, payload: { account: owner.account, challenge, signature: signChallenge(key, challenge) } })).statusCode;
  };
  assert.equal(await signIn(stranger.key, '10.0.0.66'), 401);
  assert.equal(await signIn(stranger.key, '10.0.0.66'), 401);
  assert.equal(await signIn(stranger.key, '10.0.0.66'), 429);
  for (let i = 0; i < 6; i++) assert.equal(await signIn(owner.key, '10.0.0.1'), 200);
});

test('password hashing: stored parameters are honoured; garbage never matches', async () => {
  const h = await hashPassword(PW);
  assert.equal(await verifyPassword(PW, h), true);
  assert.equal(await verifyPassword(PW + ' ', h), false);
  // A record with other (cheaper) parameters still verifies: they are read from the record.
  const [, , , , salt] = h.split('$');
  const { scryptSync } = await import('node:crypto');
  const cheap = `scrypt$1024$8$1$${salt}$${scryptSync(PW, Buffer.from(salt!, 'base64url'), 32, { N: 1024, r: 8, p: 1 }).toString('base64url')}`;
  assert.equal(await verifyPassword(PW, cheap), true);
  for (const bad of ['', 'scrypt$3$8$1$AAAA$AAAA', 'scrypt$1024$8$1$AAAA$AAAA', `scrypt$${1 << 22}$8$1$${salt}$${h.split('$')[5]}`]) assert.equal(await verifyPassword(PW, bad), false, bad);
});

test('password derivations hold at most KDF_LANES of the thread pool at once; the others wait their turn, in order, and all complete', async () => {
  let running = 0;
  let peak = 0;
  const order: string[] = [];
  const slow: PasswordKdf = async (password) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((resolve) => setTimeout(resolve, 20));
    running--;
    order.push(password);
    return Buffer.alloc(32);
  };
  const kdf = gatedKdf(slow, KDF_LANES);
  const names = Array.from({ length: 7 }, (_, i) => `p${i}`);
  await Promise.all(names.map((n) => kdf(n, Buffer.alloc(16), 32, {})));
  assert.equal(peak, KDF_LANES);
  assert.deepEqual(order, names);
  // A derivation that fails frees its lane.
  const failing = gatedKdf(async () => Promise.reject(new Error('boom')), 1);
  await assert.rejects(failing('a', Buffer.alloc(16), 32, {}), /boom/);
  await assert.rejects(failing('b', Buffer.alloc(16), 32, {}), /boom/);
  // The relay's scrypt is gated: KDF_LANES leaves libuv's other threads to file I/O.
  assert.ok(KDF_LANES >= 1 && KDF_LANES < 4);
});
