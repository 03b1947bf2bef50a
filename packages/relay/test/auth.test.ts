// Client authentication (spec/relay-api.md §1): built-in device-key accounts and app JWTs.
// Unauthenticated, expired, forged, wrong-audience and other-account requests are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { SqliteAccountStore, CHALLENGE_TTL_MS } from '../src/auth/account-store.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { newDeviceKey, signChallenge, startRelay, tempDir, testConfig } from './helpers.js';

const json = (r: { json: <T>() => T }) => r.json<{ error: { code: string } }>();

test('built-in accounts: create, challenge, sign in, use the session; second device key', async (t) => {
  const dir = tempDir(t);
  const r = await startRelay(t, testConfig(dir));
  const alice = await r.signUp();
  assert.match(alice.account, /^[a-z0-9]{26}$/);
  const list = await r.inject({ method: 'GET', url: '/v1/blobs', headers: alice.auth() });
  assert.equal(list.statusCode, 200);
  assert.deepEqual(list.json(), { blobs: [] });

  // A second device adds its key with the first one's session, then signs in with it.
  const second = newDeviceKey();
  const add = await r.inject({ method: 'POST', url: '/v1/accounts/keys', headers: alice.auth(), payload: { publicKey: second.publicKey, ...(await alice.proof()) } });
  assert.equal(add.statusCode, 201);
  const again = await r.inject({ method: 'POST', url: '/v1/accounts/keys', headers: alice.auth(), payload: { publicKey: second.publicKey, ...(await alice.proof()) } });
  assert.equal(json(again).error.code, 'key-exists');
  const ch = (await r.inject({ method: 'POST', url: '/v1/sessions/challenge', payload: { account: alice.account } })).json<{ challenge: string; expiresAt: number }>();
  assert.ok(ch.expiresAt > Date.now());
  const s = await r.inject({ method: 'POST', url: '/v1/sessions', payload: { account: alice.account, challenge: ch.challenge, signature: signChallenge(second.key, ch.challenge) } });
  assert.equal(s.statusCode, 200);
  assert.match(s.json<{ token: string }>().token, /^cs1\./);
  // The same key cannot open a second account.
  const dup = await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: alice.publicKey } });
  assert.equal(json(dup).error.code, 'key-exists');
});

test('missing, malformed and unknown bearer tokens are 401 unauthenticated', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  for (const headers of [{}, { authorization: 'Basic abc' }, { authorization: 'Bearer ' }, { authorization: 'Bearer cs1.nope' }, { authorization: 'Bearer a.b.c' }, { authorization: `Bearer ${'x'.repeat(9000)}` }]) {
    for (const [method, url] of [['GET', '/v1/blobs'], ['GET', '/v1/blobs/config'], ['PUT', '/v1/blobs/config'], ['DELETE', '/v1/blobs/config'], ['POST', '/v1/vault'], ['POST', '/v1/accounts/keys']] as const) {
      const res = await r.inject({ method, url, headers: { ...headers, 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(3) });
      assert.equal(res.statusCode, 401, `${method} ${url} ${JSON.stringify(headers).slice(0, 40)}`);
      assert.equal(json(res).error.code, 'unauthenticated');
    }
  }
});

test('sign-in: wrong signature, unknown account, replayed and expired challenges are the same 401', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const alice = await r.signUp();
  const challenge = async (account: string) => (await r.inject({ method: 'POST', url: '/v1/sessions/challenge', payload: { account } })).json<{ challenge: string }>().challenge;
  const signIn = (account: string, ch: string, signature: string) => r.inject({ method: 'POST', url: '/v1/sessions', payload: { account, challenge: ch, signature } });

  const mallory = newDeviceKey();
  let ch = await challenge(alice.account);
  const wrong = await signIn(alice.account, ch, signChallenge(mallory.key, ch));
  assert.equal(wrong.statusCode, 401);
  assert.equal(json(wrong).error.code, 'invalid-credentials');
  // That attempt consumed the challenge: even the right signature fails now.
  const replayAfterFail = await signIn(alice.account, ch, signChallenge(alice.key, ch));
  assert.equal(json(replayAfterFail).error.code, 'invalid-credentials');

  ch = await challenge(alice.account);
  const ok = await signIn(alice.account, ch, signChallenge(alice.key, ch));
  assert.equal(ok.statusCode, 200);
  const replay = await signIn(alice.account, ch, signChallenge(alice.key, ch));
  assert.equal(replay.statusCode, 401, 'a challenge is single use');
  assert.equal(json(replay).error.code, 'invalid-credentials');

  // Unknown accounts get a challenge too (no account enumeration) that never works.
  const ghost = 'a'.repeat(26);
  const gch = await challenge(ghost);
  assert.equal(json(await signIn(ghost, gch, signChallenge(alice.key, gch))).error.code, 'invalid-credentials');
  // A challenge issued for one account does not open another.
  const bob = await r.signUp();
  const bch = await challenge(bob.account);
  assert.equal(json(await signIn(alice.account, bch, signChallenge(alice.key, bch))).error.code, 'invalid-credentials');
  // A malformed body or account ID is 400; a well-formed account with a missing or
  // malformed challenge or signature is a failed sign-in like a wrong one (401, counted).
  const malformed: [unknown, number, string][] = [
    [{}, 400, 'bad-request'],
    [{ account: 'short', challenge: ch, signature: 'x' }, 400, 'bad-request'],
    [[1, 2], 400, 'bad-request'],
    [{ account: alice.account }, 401, 'invalid-credentials'],
    [{ account: alice.account, challenge: ch, signature: 'x' }, 401, 'invalid-credentials'],
  ];
  for (const [payload, status, errorCode] of malformed) {
    const res = await r.inject({ method: 'POST', url: '/v1/sessions', payload: payload as object });
    assert.deepEqual([res.statusCode, json(res).error.code], [status, errorCode], JSON.stringify(payload));
  }
  for (const publicKey of ['', 'abc', 'A'.repeat(44), 42]) {
    const res = await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey } });
    assert.equal(res.statusCode, 400, String(publicKey));
  }
});

test('expired challenges and sessions are refused (injected clock)', async (t) => {
  let now = 1_000_000;
  const store = new SqliteAccountStore(':memory:', { now: () => now, sessionTtlMs: 60_000 });
  t.after(() => store.close());
  const { key, publicKey } = newDeviceKey();
  const id = (await store.createAccount(Buffer.from(publicKey, 'base64url')))!;
  let ch = await store.challenge(id);
  now += CHALLENGE_TTL_MS + 1;
  const b64 = Buffer.from(ch.challenge).toString('base64url');
  assert.equal((await store.proveKey(id, ch.challenge, Buffer.from(signChallenge(key, b64), 'base64url'))).result, 'no-challenge', 'expired challenge');
  ch = await store.challenge(id);
  const proof = await store.proveKey(id, ch.challenge, Buffer.from(signChallenge(key, Buffer.from(ch.challenge).toString('base64url')), 'base64url'));
  assert.equal(proof.result, 'ok');
  const s = await store.openSession(id, { key: Buffer.from(publicKey, 'base64url') });
  assert.equal(await store.session(s.token), id);
  now += 60_001;
  assert.equal(await store.session(s.token), null, 'expired session');
});

test('an expired session token is 401 at the HTTP layer', async (t) => {
  let now = Date.now();
  const r = await startRelay(t, testConfig(tempDir(t), {}, { sessionTtlMs: 60_000 }), { now: () => now });
  const alice = await r.signUp();
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs', headers: alice.auth() })).statusCode, 200);
  now += 60_001; // the injected clock, not a sleep
  const res = await r.inject({ method: 'GET', url: '/v1/blobs', headers: alice.auth() });
  assert.equal(res.statusCode, 401);
});

async function jwtSetup(t: Parameters<typeof tempDir>[0]) {
  const dir = tempDir(t);
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const other = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const jwksFile = join(dir, 'jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
  const r = await startRelay(t, testConfig(dir, { COFFER_RELAY_JWT_JWKS_FILE: jwksFile, COFFER_RELAY_JWT_ISSUER: 'https://app.example', COFFER_RELAY_JWT_AUDIENCE: 'coffer' }));
  const token = (o: { sub?: string; aud?: string; iss?: string; exp?: number | null; key?: CryptoKey; kid?: string } = {}) => {
    const j = new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: o.kid ?? 'k1' }).setIssuer(o.iss ?? 'https://app.example').setAudience(o.aud ?? 'coffer').setIssuedAt();
    if (o.sub !== '') j.setSubject(o.sub ?? 'user-1');
    if (o.exp !== null) j.setExpirationTime(o.exp ?? Math.floor(Date.now() / 1000) + 600);
    return j.sign(o.key ?? privateKey);
  };
  return { r, token, otherKey: other.privateKey };
}

test('JWT app tokens: valid ones map to app:<sub>; expired, forged, wrong audience/issuer, no exp, alg none refused', async (t) => {
  const { r, token, otherKey } = await jwtSetup(t);
  const get = (tok: string) => r.inject({ method: 'GET', url: '/v1/blobs', headers: { authorization: `Bearer ${tok}` } });
  assert.equal((await get(await token())).statusCode, 200);
  const now = Math.floor(Date.now() / 1000);
  assert.equal((await get(await token({ exp: now - 30 }))).statusCode, 200, 'within the 60 s leeway');
  const bad: Record<string, string> = {
    expired: await token({ exp: now - 300 }),
    forged: await token({ key: otherKey }),
    'wrong audience': await token({ aud: 'someone-else' }),
    'wrong issuer': await token({ iss: 'https://evil.example' }),
    'no exp': await token({ exp: null }),
    'no sub': await token({ sub: '' }),
    'unknown kid': await token({ kid: 'k2', key: otherKey }),
  };
  const [h, p] = (await token()).split('.');
  bad['alg none'] = `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${p}.`;
  bad['tampered payload'] = `${h}.${Buffer.from(JSON.stringify({ sub: 'admin', aud: 'coffer', iss: 'https://app.example', exp: now + 600 })).toString('base64url')}.${(await token()).split('.')[2]}`;
  for (const [what, tok] of Object.entries(bad)) {
    const res = await get(tok);
    assert.equal(res.statusCode, 401, what);
    assert.equal(json(res).error.code, 'unauthenticated', what);
  }
  // App accounts have no device keys.
  const res = await r.inject({ method: 'POST', url: '/v1/accounts/keys', headers: { authorization: `Bearer ${await token()}` }, payload: { publicKey: newDeviceKey().publicKey } });
  assert.equal(json(res).error.code, 'accounts-disabled');
});

test("one account cannot see, read, overwrite or delete another's blobs (local and app namespaces apart)", async (t) => {
  const { r, token } = await jwtSetup(t);
  const alice = await r.signUp();
  const bob = await r.signUp();
  const put = (h: Record<string, string>, name: string, body: string) => r.inject({ method: 'PUT', url: `/v1/blobs/${name}`, headers: { ...h, 'content-type': 'application/octet-stream' }, payload: Buffer.from(body) });
  assert.equal((await put(alice.auth(), 'config', 'alice-config')).statusCode, 201);
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs/config', headers: bob.auth() })).statusCode, 404);
  assert.equal((await r.inject({ method: 'HEAD', url: '/v1/blobs/config', headers: bob.auth() })).statusCode, 404);
  assert.deepEqual((await r.inject({ method: 'GET', url: '/v1/blobs?prefix=', headers: bob.auth() })).json(), { blobs: [] });
  assert.equal((await put(bob.auth(), 'config', 'bob-config')).statusCode, 201, 'same name, own namespace');
  assert.equal((await r.inject({ method: 'DELETE', url: '/v1/blobs/config', headers: bob.auth() })).statusCode, 204);
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs/config', headers: alice.auth() })).body, 'alice-config');
  // An app user whose subject equals alice's local id is still a different account.
  const app = { authorization: `Bearer ${await token({ sub: alice.account })}` };
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs/config', headers: app })).statusCode, 404);
});

test('config: symmetric (HS*) and "none" JWT algorithms are refused at load', (t) => {
  const dir = tempDir(t);
  const load = (algorithms: unknown) => {
    const file = join(dir, 'relay.json');
    writeFileSync(file, JSON.stringify({ auth: { jwt: { jwksFile: join(dir, 'jwks.json'), issuer: 'https://app.example', audience: 'coffer', algorithms } } }));
    return loadConfig({ file, env: { COFFER_RELAY_DATA_DIR: dir }, cwd: dir });
  };
  for (const bad of [['HS256'], ['RS256', 'hs512'], ['none'], ['ES256', 'NONE'], [], 'RS256']) assert.throws(() => load(bad), ConfigError, JSON.stringify(bad));
  assert.deepEqual(load(['ES256', 'EdDSA']).jwt?.algorithms, ['ES256', 'EdDSA']);
});

test('SQLite session check, two stores on one file (two relay processes): a session revoked or ended through one is refused by the other at its very next check, and one is refused at its expiry to the millisecond', async (t) => {
  const dir = tempDir(t);
  let now = 5_000_000;
  const a = new SqliteAccountStore(join(dir, 'relay.db'), { now: () => now, sessionTtlMs: 60_000 });
  const b = new SqliteAccountStore(join(dir, 'relay.db'), { now: () => now, sessionTtlMs: 60_000 });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  const { publicKey } = newDeviceKey();
  const raw = Buffer.from(publicKey, 'base64url');
  const id = (await a.createAccount(raw))!;
  const s1 = await a.openSession(id, { key: raw });
  const s2 = await a.openSession(id, { password: true });
  const s3 = await a.openSession(id, { password: true });
  // Checked (and so warm) at A, many times, before each revocation.
  for (let i = 0; i < 3; i++) for (const s of [s1, s2, s3]) assert.deepEqual(await a.sessionRecord(s.token), { account: id, expiresAt: s.expiresAt });
  assert.equal(await b.revokeSession(s1.token), true);
  assert.equal(await a.session(s1.token), null, 'signed out through the other store');
  assert.equal(await a.sessionRecord(s1.token), null);
  assert.equal(await a.session(s2.token), id);
  assert.equal(await b.revokeOtherSessions(id, s3.token), 1);
  assert.equal(await a.session(s2.token), null, 'ended by "end other sessions" through the other store');
  assert.equal(await a.session(s3.token), id);
  now = s3.expiresAt - 1;
  assert.equal(await a.session(s3.token), id, 'live until its expiry');
  now = s3.expiresAt;
  assert.equal(await a.session(s3.token), null, 'refused at its expiry');
  assert.equal(await a.sessionRecord(s3.token), null);
  // A made-up token of the same shape is unknown, and the session's device key is still read apart.
  assert.equal(await a.session(`cs1.${Buffer.alloc(32, 7).toString('base64url')}`), null);
  const s4 = await b.openSession(id, { key: raw });
  assert.deepEqual(await a.sessionKey(s4.token), raw);
  assert.equal(await b.removeKey(id, raw), true);
  assert.equal(await a.session(s4.token), null, 'ended with its device key through the other store');
});
