// Issue 11: the penetration test's findings, each as a test that failed before the fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { JwtVerifier } from '../src/auth/jwt.js';
import { addressKey } from '../src/rate-limit.js';
import { inFlightReaches, keyProof, newDeviceKey, signChallenge, solvePow, startRelay, tempDir, testConfig, type TestRelay } from './helpers.js';

const octet = { 'content-type': 'application/octet-stream' };
const code = (r: { json: <T>() => T }) => r.json<{ error: { code: string } }>().error.code;
const PW = 'correct horse battery staple';

async function listen(r: TestRelay): Promise<URL> {
  return new URL(await r.relay.app.listen({ host: '127.0.0.1', port: 0 }));
}

/** A raw socket: writes `head`, collects what comes back. */
async function raw(url: URL, head: string): Promise<{ s: Socket; got: () => string; closed: Promise<unknown> }> {
  const s = connect(Number(url.port), '127.0.0.1');
  await once(s, 'connect');
  let got = '';
  s.on('data', (d) => (got += d));
  s.on('error', () => {});
  const closed = once(s, 'close');
  s.write(head);
  return { s, got: () => got, closed };
}

const waitFor = async (pred: () => boolean, ms = 20_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** A raw connection from `from` (another loopback address is another client) that sends nothing yet. */
async function idle(url: URL, from: string): Promise<{ s: Socket; got: () => string; closed: Promise<unknown> }> {
  const s = connect({ port: Number(url.port), host: '127.0.0.1', localAddress: from });
  await once(s, 'connect');
  let got = '';
  s.on('data', (d) => (got += d));
  s.on('error', () => {});
  return { s, got: () => got, closed: once(s, 'close') };
}

test('one address cannot take every connection: past maxConnectionsPerAddress its new connections get 429 too-many-connections; other addresses and trusted proxies are served', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t), { COFFER_RELAY_MAX_CONNECTIONS_PER_ADDRESS: '4', COFFER_RELAY_TRUST_PROXY: '127.0.0.3' }));
  const url = await listen(r);
  const held = await Promise.all(Array.from({ length: 4 }, () => idle(url, '127.0.0.1')));
  const fifth = await idle(url, '127.0.0.1');
  await fifth.closed;
  assert.match(fifth.got(), /^HTTP\/1\.1 429 [\s\S]*"code":"too-many-connections"/);
  // Another client is served meanwhile.
  const other = await idle(url, '127.0.0.2');
  other.s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await other.closed;
  assert.match(other.got(), /^HTTP\/1\.1 200 /);
  // A trusted proxy carries many clients: not capped.
  const proxied = await Promise.all(Array.from({ length: 6 }, () => idle(url, '127.0.0.3')));
  const last = proxied[5]!;
  last.s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await last.closed;
  assert.match(last.got(), /^HTTP\/1\.1 200 /);
  // One of the first address's connections closes: it may open another.
  held[0]!.s.destroy();
  await held[0]!.closed;
  let served = '';
  for (const end = Date.now() + 20_000; !served.startsWith('HTTP/1.1 200') && Date.now() < end; ) {
    const again = await idle(url, '127.0.0.1');
    again.s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await again.closed;
    served = again.got();
  }
  assert.match(served, /^HTTP\/1\.1 200 /);
  const m = await r.relay.admin.inject({ method: 'GET', url: '/metrics' });
  assert.match(m.body, /^coffer_relay_connections_refused_total [1-9]/m);
  for (const c of [...held, ...proxied]) c.s.destroy();
});

// ---- High: uploads ----

test('strangers cannot block uploads: unauthenticated PUTs declaring 64 MiB reserve nothing and are refused before their body', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t), { COFFER_RELAY_MAX_IN_FLIGHT_BYTES: String(64 * 1024 * 1024) }));
  const owner = await r.signUp();
  const url = await listen(r);
  const strangers = await Promise.all(
    Array.from({ length: 4 }, () => raw(url, `PUT /v1/blobs/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\nabc`)),
  );
  await waitFor(() => strangers.every((c) => c.got().length > 0));
  for (const c of strangers) assert.match(c.got(), /^HTTP\/1\.1 401 /, 'refused at once, before the body');
  const res = await fetch(`${url.origin}/v1/blobs/mine`, { method: 'PUT', headers: { ...owner.auth(), ...octet }, body: 'hello' });
  assert.equal(res.status, 201, 'the real account is not blocked');
  for (const c of strangers) c.s.destroy();
});

test('an unauthenticated 50 MiB PUT is answered 401 without reading the body, and the connection is closed', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const url = await listen(r);
  const c = await raw(url, `PUT /v1/blobs/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer cs1.nope\r\nContent-Type: application/octet-stream\r\nContent-Length: ${50 * 1024 * 1024}\r\n\r\n`);
  c.s.write(Buffer.alloc(1024));
  await waitFor(() => c.got().includes('\r\n\r\n'));
  assert.match(c.got(), /^HTTP\/1\.1 401 /);
  assert.match(c.got(), /connection: close/i);
  await Promise.race([c.closed, new Promise((_, rej) => setTimeout(() => rej(new Error('not closed')), 5000))]);
});

test('per-account in-flight bytes: one account cannot hold the relay\'s upload budget', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t), { COFFER_RELAY_MAX_OBJECT_BYTES: '1000', COFFER_RELAY_MAX_IN_FLIGHT_BYTES: '4000', COFFER_RELAY_MAX_IN_FLIGHT_BYTES_PER_ACCOUNT: '1000' }));
  const a = await r.signUp();
  const b = await r.signUp();
  const url = await listen(r);
  // The slow upload holds what it has sent (routes/blobs.ts: budgets are taken as bytes
  // arrive): the second starts once the relay counts them (its metric), not after a
  // fixed sleep, which a loaded machine overtakes.
  const slow = await raw(url, `PUT /v1/blobs/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n`);
  await waitFor(() => slow.got().includes('100 Continue'));
  slow.s.write(Buffer.alloc(998, 0x78));
  await inFlightReaches(r, 998);
  const again = await fetch(`${url.origin}/v1/blobs/second`, { method: 'PUT', headers: { ...a.auth(), ...octet }, body: 'hello' });
  assert.equal(again.status, 429);
  assert.equal(((await again.json()) as { error: { code: string } }).error.code, 'account-uploads-busy');
  assert.equal((await fetch(`${url.origin}/v1/blobs/theirs`, { method: 'PUT', headers: { ...b.auth(), ...octet }, body: 'hello' })).status, 201, 'another account goes ahead');
  slow.s.destroy();
});

test('an upload body that stalls is ended by the body idle timeout with a catalogue 408', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t), { COFFER_RELAY_BODY_IDLE_TIMEOUT_MS: '300' }, { requestTimeoutMs: 60_000 }));
  const a = await r.signUp();
  const url = await listen(r);
  const started = Date.now();
  const c = await raw(url, `PUT /v1/blobs/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789`);
  await waitFor(() => c.got().includes('}'), 30_000);
  // The request timeout is 60 s: an answer within 30 s is the 300 ms idle timeout's
  // (3 s was tight for connect + auth + 300 ms on a loaded 2-core machine).
  assert.ok(Date.now() - started < 30_000, 'well before the request timeout');
  assert.match(c.got(), /^HTTP\/1\.1 408 /);
  assert.match(c.got(), /"code":"request-timeout"/);
  c.s.destroy();
});

test('Expect: 100-continue is answered only after authentication', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const a = await r.signUp();
  const url = await listen(r);
  const stranger = await raw(url, 'PUT /v1/blobs/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
  await waitFor(() => stranger.got().includes('\r\n\r\n'));
  assert.match(stranger.got(), /^HTTP\/1\.1 401 /, 'no 100 Continue for a stranger');
  stranger.s.destroy();
  const owner = await raw(url, `PUT /v1/blobs/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`);
  await waitFor(() => owner.got().includes('\r\n\r\n'));
  assert.match(owner.got(), /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
  owner.s.write('hello');
  await waitFor(() => /HTTP\/1\.1 201/.test(owner.got()));
  owner.s.destroy();
});

// ---- High: device keys and sessions ----

test('device keys: listed, removed with a proof (its sessions end, it no longer signs in); sign-out and ending other sessions', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const owner = await r.signUp();
  const second = newDeviceKey();
  assert.equal((await r.inject({ method: 'POST', url: '/v1/accounts/keys', headers: owner.auth(), payload: { publicKey: second.publicKey, ...(await owner.proof()) } })).statusCode, 201);
  const signIn = async (key: typeof second.key) => {
    const p = await keyProof(r.inject, owner.account, key);
    return r.inject({ method: 'POST', url: '/v1/sessions', payload: { account: owner.account, ...p } });
  };
  const secondSession = (await signIn(second.key)).json<{ token: string }>().token;
  const listed = await r.inject({ method: 'GET', url: '/v1/accounts/keys', headers: owner.auth() });
  assert.equal(listed.statusCode, 200);
  const body = listed.json<{ keys: { publicKey: string; createdAt: number; lastUsedAt: number | null }[]; current: string }>();
  assert.deepEqual(body.keys.map((k) => k.publicKey).sort(), [owner.publicKey, second.publicKey].sort());
  assert.equal(body.current, owner.publicKey);
  // A bare session cannot remove a key.
  const bare = await r.inject({ method: 'DELETE', url: `/v1/accounts/keys/${second.publicKey}`, headers: owner.auth() });
  assert.equal(bare.statusCode, 403);
  assert.equal(code(bare), 'proof-required');
  const removed = await r.inject({ method: 'DELETE', url: `/v1/accounts/keys/${second.publicKey}`, headers: owner.auth(), payload: await owner.proof() });
  assert.equal(removed.statusCode, 204);
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs', headers: { authorization: `Bearer ${secondSession}` } })).statusCode, 401, 'its session ended');
  assert.equal((await signIn(second.key)).statusCode, 401, 'it no longer signs in');
  assert.equal(code(await r.inject({ method: 'DELETE', url: `/v1/accounts/keys/${second.publicKey}`, headers: owner.auth(), payload: await owner.proof() })), 'key-not-found');
  // Sessions: end the others, then sign out.
  const other = (await signIn(owner.key)).json<{ token: string }>().token;
  const ended = await r.inject({ method: 'DELETE', url: '/v1/sessions', headers: owner.auth() });
  assert.deepEqual(ended.json(), { revoked: 1 });
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs', headers: { authorization: `Bearer ${other}` } })).statusCode, 401);
  assert.equal((await r.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: owner.auth() })).statusCode, 204);
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs', headers: owner.auth() })).statusCode, 401, 'signed out');
});

test('a phished password: the thief\'s device key stops working once the owner changes the password with revokeOtherDevices', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const { key, publicKey } = newDeviceKey();
  const account = (await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey, password: PW } })).json<{ account: string }>().account;
  const ownerToken = (await r.inject({ method: 'POST', url: '/v1/sessions', payload: { account, ...(await keyProof(r.inject, account, key)) } })).json<{ token: string }>().token;
  // The thief signs in with the password and registers a key of its own.
  const thiefToken = (await r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: '10.6.6.6', payload: { account, password: PW } })).json<{ token: string }>().token;
  const thief = newDeviceKey();
  assert.equal((await r.inject({ method: 'POST', url: '/v1/accounts/keys', remoteAddress: '10.6.6.6', headers: { authorization: `Bearer ${thiefToken}` }, payload: { publicKey: thief.publicKey, currentPassword: PW } })).statusCode, 201);
  // The owner changes the password and revokes the other devices.
  const changed = await r.inject({ method: 'PUT', url: '/v1/accounts/password', headers: { authorization: `Bearer ${ownerToken}` }, payload: { password: 'a brand new password', currentPassword: PW, revokeOtherDevices: true } });
  assert.equal(changed.statusCode, 204);
  const thiefSignIn = await r.inject({ method: 'POST', url: '/v1/sessions', remoteAddress: '10.6.6.6', payload: { account, ...(await keyProof(r.inject, account, thief.key)) } });
  assert.equal(thiefSignIn.statusCode, 401, 'the thief\'s key is gone');
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs', headers: { authorization: `Bearer ${thiefToken}` } })).statusCode, 401);
  const keys = (await r.inject({ method: 'GET', url: '/v1/accounts/keys', headers: { authorization: `Bearer ${ownerToken}` } })).json<{ keys: { publicKey: string }[] }>().keys;
  assert.deepEqual(keys.map((k) => k.publicKey), [publicKey], 'the owner\'s device stays');
});

// ---- Medium: lockouts ----

test('70 junk device-key sign-ins from 7 addresses, and bad signatures over real challenges, never stop the owner\'s sign-in', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const owner = await r.signUp('10.7.0.1');
  const stranger = newDeviceKey();
  await Promise.all(
    Array.from({ length: 70 }, (_, i) =>
      r.inject({ method: 'POST', url: '/v1/sessions', remoteAddress: `10.7.1.${i % 7}`, payload: { account: owner.account, challenge: Buffer.alloc(32, i).toString('base64url'), signature: Buffer.alloc(64, i).toString('base64url') } }),
    ),
  );
  for (let a = 0; a < 7; a++) {
    for (let i = 0; i < 12; i++) {
      const { challenge } = (await r.inject({ method: 'POST', url: '/v1/sessions/challenge', remoteAddress: `10.7.2.${a}`, payload: { account: owner.account } })).json<{ challenge: string }>();
      if (!challenge) break;
      await r.inject({ method: 'POST', url: '/v1/sessions', remoteAddress: `10.7.2.${a}`, payload: { account: owner.account, challenge, signature: signChallenge(stranger.key, challenge) } });
    }
  }
  for (const ip of ['10.7.0.1', '10.7.9.9']) {
    const p = await keyProof((o) => r.inject({ ...o, remoteAddress: ip }), owner.account, owner.key);
    const res = await r.inject({ method: 'POST', url: '/v1/sessions', remoteAddress: ip, payload: { account: owner.account, ...p } });
    assert.equal(res.statusCode, 200, `owner from ${ip}`);
  }
});

// A cheap stand-in for scrypt (these tests count attempts, not work).
const fastKdf = async (pw: string, salt: Buffer, keylen: number) => createHash('sha256').update(salt).update(pw).digest().subarray(0, keylen);

test('5 wrong passwords from each of 6 addresses: the right password from a fresh address is not refused (a proof-of-work, then in)', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)), { passwordKdf: fastKdf });
  const { publicKey } = newDeviceKey();
  const account = (await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey, password: PW } })).json<{ account: string }>().account;
  for (let a = 0; a < 6; a++) for (let i = 0; i < 5; i++) await r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: `10.8.0.${a}`, payload: { account, password: `wrong guess ${a} ${i}` } });
  let res = await r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: '10.8.9.9', payload: { account, password: PW } });
  if (res.statusCode === 428) {
    const pow = solvePow(res.json<{ error: { pow: { challenge: string; bits: number } } }>().error.pow);
    res = await r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: '10.8.9.9', payload: { account, password: PW, pow } });
  }
  assert.equal(res.statusCode, 200);
  // The puzzles grow harder the further beyond the limit the account is tried.
  const base = testConfig(tempDir(t));
  const r2 = await startRelay(t, { ...base, limits: { ...base.limits, passwordSignInByAccount: { perSecond: 0.0001, burst: 1 }, passwordSignInByAccountAddress: { perSecond: 1, burst: 1000 }, signInByAddress: { perSecond: 1, burst: 1000 }, passwordPow: { baseBits: 4, maxBits: 12 } } }, { passwordKdf: fastKdf });
  const acct2 = (await r2.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: newDeviceKey().publicKey, password: PW } })).json<{ account: string }>().account;
  const bitsSeen: number[] = [];
  await r2.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account: acct2, password: 'wrong guess 00' } });
  for (let i = 0; i < 4; i++) {
    const ask = await r2.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account: acct2, password: `wrong guess ${i}x` } });
    assert.equal(ask.statusCode, 428);
    const puzzle = ask.json<{ error: { pow: { challenge: string; bits: number } } }>().error.pow;
    bitsSeen.push(puzzle.bits);
    assert.equal((await r2.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account: acct2, password: `wrong guess ${i}x`, pow: solvePow(puzzle) } })).statusCode, 401);
  }
  assert.ok(bitsSeen[3]! > bitsSeen[0]!, `difficulty grows: ${bitsSeen.join(',')}`);
});

test('proof-of-work puzzles collected early at the base difficulty do not keep their price once the account is tried harder', async (t) => {
  const base = testConfig(tempDir(t));
  const r = await startRelay(t, { ...base, limits: { ...base.limits, passwordSignInByAccount: { perSecond: 0.0001, burst: 1 }, passwordSignInByAccountAddress: { perSecond: 1, burst: 1000 }, signInByAddress: { perSecond: 1, burst: 1000 }, passwordPow: { baseBits: 4, maxBits: 12 } } }, { passwordKdf: fastKdf });
  const account = (await r.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey: newDeviceKey().publicKey, password: PW } })).json<{ account: string }>().account;
  await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account, password: 'wrong guess 00' } });
  // A guesser asks for many puzzles before paying for any: each is issued at the base difficulty.
  const puzzles: { challenge: string; bits: number }[] = [];
  for (let i = 0; i < 10; i++) puzzles.push((await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account, password: `wrong guess ${i}` } })).json<{ error: { pow: { challenge: string; bits: number } } }>().error.pow);
  assert.deepEqual(new Set(puzzles.map((p) => p.bits)), new Set([4]));
  const statuses: number[] = [];
  for (const p of puzzles) statuses.push((await r.inject({ method: 'POST', url: '/v1/sessions/password', payload: { account, password: 'wrong guess y', pow: solvePow(p) } })).statusCode);
  // Paid guesses deepen the debt: a puzzle cheaper than what the account now asks buys no guess.
  assert.equal(statuses.filter((s) => s === 401).length < puzzles.length, true, `guesses bought with base-difficulty puzzles: ${statuses.join(',')}`);
  assert.equal(statuses.at(-1), 428, 'the last one is asked for a harder puzzle');
});

test('trustProxy: behind a trusted proxy each client has its own bucket; without it X-Forwarded-For is ignored', async (t) => {
  const mk = async (trust: boolean) => {
    const base = testConfig(tempDir(t), trust ? { COFFER_RELAY_TRUST_PROXY: '1' } : {});
    return startRelay(t, { ...base, limits: { ...base.limits, perAddress: { perSecond: 0.01, burst: 2 } } });
  };
  const get = (r: TestRelay, client: string) => r.inject({ method: 'GET', url: '/v1/blobs', remoteAddress: '127.0.0.1', headers: { 'x-forwarded-for': client } });
  const trusted = await mk(true);
  for (let i = 0; i < 2; i++) assert.equal((await get(trusted, '198.51.100.1')).statusCode, 401);
  assert.equal((await get(trusted, '198.51.100.1')).statusCode, 429);
  assert.equal((await get(trusted, '198.51.100.2')).statusCode, 401, 'another client behind the same proxy is not limited');
  const untrusted = await mk(false);
  for (let i = 0; i < 2; i++) await get(untrusted, `198.51.100.${i}`);
  assert.equal((await get(untrusted, '198.51.100.9')).statusCode, 429, 'a forged header buys nothing');
});

test('IPv6 clients are keyed by /64', async (t) => {
  assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(addressKey('2001:db8:1:2:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
  assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(addressKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(addressKey('192.0.2.7'), '192.0.2.7');
  assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  const base = testConfig(tempDir(t));
  const r = await startRelay(t, { ...base, limits: { ...base.limits, perAddress: { perSecond: 0.01, burst: 2 } } });
  const get = (ip: string) => r.inject({ method: 'GET', url: '/v1/blobs', remoteAddress: ip });
  await get('2001:db8:1:2::1');
  await get('2001:db8:1:2::2');
  assert.equal((await get('2001:db8:1:2::3')).statusCode, 429, 'the same /64');
  assert.equal((await get('2001:db8:1:3::1')).statusCode, 401, 'another /64');
});

// ---- Low ----

test('a blob name that is also a directory: DELETE is no 503, and the name is free again once the objects below are gone', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const a = (await r.signUp()).auth();
  const put = (name: string) => r.inject({ method: 'PUT', url: `/v1/blobs/${name}`, headers: { ...a, ...octet }, payload: Buffer.from(name) });
  assert.equal((await put('a/b')).statusCode, 201);
  assert.equal((await r.inject({ method: 'DELETE', url: '/v1/blobs/a', headers: a })).statusCode, 204);
  assert.equal((await put('a')).statusCode, 409, 'taken while a/b exists (a directory on disk)');
  assert.equal((await r.inject({ method: 'DELETE', url: '/v1/blobs/a/b', headers: a })).statusCode, 204);
  assert.equal((await put('a')).statusCode, 201, 'free again');
  assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs/a', headers: a })).body, 'a');
});

test('JWTs: a maximum lifetime, no future iat, iat required; the JWKS file reloads', async (t) => {
  const dir = tempDir(t);
  const k1 = await generateKeyPair('ES256');
  const k2 = await generateKeyPair('ES256');
  type Key = Awaited<ReturnType<typeof generateKeyPair>>['publicKey'];
  const jwk = async (k: Key, kid: string) => ({ ...(await exportJWK(k)), kid, alg: 'ES256', use: 'sig' });
  const file = join(dir, 'jwks.json');
  writeFileSync(file, JSON.stringify({ keys: [await jwk(k1.publicKey, 'k1')] }));
  const v = new JwtVerifier({ jwksFile: file, issuer: 'iss', audience: 'aud', maxTokenAgeSeconds: 3600 });
  t.after(() => v.close());
  const now = Math.floor(Date.now() / 1000);
  const tok = (o: { iat?: number | null; exp?: number; key?: Key; kid?: string } = {}) => {
    const j = new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: o.kid ?? 'k1' }).setIssuer('iss').setAudience('aud').setSubject('u1').setExpirationTime(o.exp ?? now + 600);
    if (o.iat !== null) j.setIssuedAt(o.iat ?? now);
    return j.sign(o.key ?? k1.privateKey);
  };
  assert.equal(await v.subject(await tok()), 'u1');
  assert.equal(await v.subject(await tok({ iat: now + 600 })), null, 'iat in the future');
  assert.equal(await v.subject(await tok({ iat: now - 7200, exp: now + 600 })), null, 'older than the maximum age');
  assert.equal(await v.subject(await tok({ exp: now + 30 * 24 * 3600 })), null, 'a lifetime beyond the maximum');
  assert.equal(await v.subject(await tok({ iat: null })), null, 'no iat');
  // Rotation: the new key works after a reload (SIGHUP calls reload; a change is picked up by watch).
  const rotated = await tok({ key: k2.privateKey, kid: 'k2' });
  assert.equal(await v.subject(rotated), null);
  writeFileSync(file, JSON.stringify({ keys: [await jwk(k2.publicKey, 'k2')] }));
  v.reload();
  assert.equal(await v.subject(rotated), 'u1');
  writeFileSync(file, '{ half-written');
  assert.throws(() => v.reload());
  assert.equal(await v.subject(rotated), 'u1', 'a bad file keeps the keys in use');
  v.watch(() => {}, 50);
  const good = JSON.stringify({ keys: [await jwk(k1.publicKey, 'k1')] });
  const fresh = await tok();
  const end = Date.now() + 20_000; // a poll: ends as soon as the change is picked up
  // Written again until picked up: watchFile takes its first stat after watch() returns,
  // so a write made at once can be that first stat (its baseline), not a change; CI once
  // failed so (session 20). Every later write is a change the watcher must see.
  while ((await v.subject(fresh)) !== 'u1' && Date.now() < end) {
    writeFileSync(file, good);
    await new Promise((res) => setTimeout(res, 150));
  }
  assert.equal(await v.subject(fresh), 'u1', 'picked up on change');
});

test('errors before routing (431, malformed request, request timeout) have the catalogue body shape', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t), {}, { requestTimeoutMs: 1000 }));
  const url = await listen(r);
  const big = await raw(url, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  await waitFor(() => big.got().includes('}'));
  assert.match(big.got(), /^HTTP\/1\.1 431 /);
  assert.deepEqual(JSON.parse(big.got().split('\r\n\r\n')[1]!).error.code, 'headers-too-large');
  const bad = await raw(url, 'NOT HTTP AT ALL\r\n\r\n');
  await waitFor(() => bad.got().includes('}'));
  assert.match(bad.got(), /^HTTP\/1\.1 400 /);
  assert.equal(JSON.parse(bad.got().split('\r\n\r\n')[1]!).error.code, 'bad-request');
  const slow = await raw(url, 'GET /healthz HTTP/1.1\r\nHost: x\r\n');
  await waitFor(() => slow.got().includes('}'), 20_000);
  assert.match(slow.got(), /^HTTP\/1\.1 408 /);
  assert.equal(JSON.parse(slow.got().split('\r\n\r\n')[1]!).error.code, 'request-timeout');
  for (const c of [big, bad, slow]) c.s.destroy();
});

test('/metrics is on the admin listener only; the relay database files are 0600', async (t) => {
  const dir = tempDir(t);
  const r = await startRelay(t, testConfig(dir));
  await r.signUp();
  assert.equal((await r.inject({ method: 'GET', url: '/metrics' })).statusCode, 404);
  assert.equal((await r.relay.admin.inject({ method: 'GET', url: '/metrics' })).statusCode, 200);
  for (const f of ['relay.db', 'relay.db-wal', 'relay.db-shm']) {
    const mode = statSync(join(dir, f)).mode & 0o777;
    assert.equal(mode & 0o077, 0, `${f} is ${mode.toString(8)}`);
  }
});

test('blob routes: only an upload has a body, of type octet-stream; others are refused from their headers and the connection is closed', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const a = await r.signUp();
  const url = await listen(r);
  const auth = `Authorization: Bearer ${a.token}\r\n`;
  assert.equal((await fetch(`${url.origin}/v1/blobs/mine`, { method: 'PUT', headers: { ...a.auth(), 'content-type': 'application/octet-stream' }, body: 'hello' })).status, 201);
  // A GET or DELETE declaring 1 GiB, or chunked: answered at once, body unread, connection closed.
  for (const head of [
    `GET /v1/blobs/mine HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/octet-stream\r\nContent-Length: ${2 ** 30}\r\n\r\nxxxx`,
    `DELETE /v1/blobs/mine HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nxxxx\r\n`,
    `HEAD /v1/blobs/mine HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 10\r\n\r\n`,
    `GET /v1/blobs?prefix= HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{`,
  ]) {
    const c = await raw(url, head);
    await c.closed;
    const method = head.split(' ')[0]!;
    assert.match(c.got(), /^HTTP\/1\.1 400 /, method);
    assert.match(c.got(), /connection: close/i, method);
    if (method !== 'HEAD') assert.match(c.got(), /"code":"bad-request"/, method);
  }
  // The object is still there: the DELETE with a body removed nothing.
  assert.equal((await fetch(`${url.origin}/v1/blobs/mine`, { headers: a.auth() })).status, 200);
  // An upload of JSON (of any size) or of a form is 415, nothing stored.
  for (const [type, size] of [['application/json', 10], ['application/json', 100_000], ['text/plain', 5], ['application/octet-streamx', 5]] as const) {
    const res = await fetch(`${url.origin}/v1/blobs/other`, { method: 'PUT', headers: { ...a.auth(), 'content-type': type }, body: 'x'.repeat(size) });
    assert.equal(res.status, 415, `${type} ${size}`);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'unsupported-media-type', `${type} ${size}`);
  }
  assert.equal((await fetch(`${url.origin}/v1/blobs/other`, { headers: a.auth() })).status, 404);
  // With parameters and in another case it is still octet-stream.
  assert.equal((await fetch(`${url.origin}/v1/blobs/third`, { method: 'PUT', headers: { ...a.auth(), 'content-type': 'Application/Octet-Stream; x=1' }, body: 'hi' })).status, 201);
});
