// The session cache (auth/session-cache.ts, issue 13): verified sessions believed for a
// few seconds so the hot path does not ask the store per request. These tests play the
// attacker against it — a stolen token after sign-out, after "end other sessions", after
// the key or password changed; an expired token; made-up tokens probing the cache; a
// revocation racing a lookup — on real SQLite and (when available) a real PostgreSQL.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { SqliteAccountStore, type AccountStore } from '../src/auth/account-store.js';
import { PgAccountStore } from '../src/auth/pg-store.js';
import { DEFAULT_SESSION_CACHE_MS, SessionCachingStore } from '../src/auth/session-cache.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { newDeviceKey, startRelay, tempDir, testConfig } from './helpers.js';
import { postgresMissing, startPostgres, type TestPostgres } from './postgres.js';

const skipPg = process.env.CI ? false : postgresMissing() ?? false;
let server: TestPostgres | undefined;
let dbs = 0;
before(async () => {
  if (!skipPg) server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

/** The store with its session lookups counted (a real store underneath). */
function counted(store: AccountStore): { store: AccountStore; lookups: () => number } {
  let n = 0;
  const lookup = store.sessionRecord.bind(store);
  store.sessionRecord = (token: string) => {
    n++;
    return lookup(token);
  };
  return { store, lookups: () => n };
}

async function newSession(store: AccountStore): Promise<{ id: string; key: Buffer; token: string }> {
  const key = Buffer.from(newDeviceKey().publicKey, 'base64url');
  const id = (await store.createAccount(key))!;
  return { id, key, token: (await store.openSession(id, { key })).token };
}

test('config: the session cache is on by default for PostgreSQL (a few seconds), off for SQLite, 0 turns it off, and it is capped at a minute', () => {
  const pgEnv = { COFFER_RELAY_ACCOUNT_STORE: 'postgres', COFFER_RELAY_PG_URL: 'postgres://u@db/coffer' };
  assert.equal(loadConfig({ env: pgEnv }).sessionCacheMs, DEFAULT_SESSION_CACHE_MS);
  assert.equal(loadConfig({ env: { ...pgEnv, COFFER_RELAY_SESSION_CACHE_MS: '0' } }).sessionCacheMs, 0);
  assert.equal(loadConfig({ env: {} }).sessionCacheMs, 0);
  assert.equal(loadConfig({ env: { COFFER_RELAY_SESSION_CACHE_MS: '2000' } }).sessionCacheMs, 2000);
  assert.throws(() => loadConfig({ env: { COFFER_RELAY_SESSION_CACHE_MS: '600000' } }), ConfigError);
  assert.throws(() => loadConfig({ env: { COFFER_RELAY_SESSION_CACHE_MS: 'soon' } }), ConfigError);
});

test('a live session is checked against the store once per cache lifetime, then again', async (t) => {
  let now = 1_000_000;
  const { store, lookups } = counted(new SqliteAccountStore(':memory:', { now: () => now }));
  const cache = new SessionCachingStore(store, { ttlMs: 5000, now: () => now });
  t.after(() => cache.close());
  const s = await newSession(cache);
  for (let i = 0; i < 10; i++) assert.equal(await cache.session(s.token), s.id);
  assert.equal(lookups(), 1);
  now += 5000;
  assert.equal(await cache.session(s.token), s.id);
  assert.equal(lookups(), 2, 'asked again once the entry ran out');
});

test('made-up, revoked and expired tokens are never cached: each check asks the store, so the cache cannot be probed', async (t) => {
  const now = 1_000_000;
  const { store, lookups } = counted(new SqliteAccountStore(':memory:', { now: () => now, sessionTtlMs: 60_000 }));
  const cache = new SessionCachingStore(store, { ttlMs: 5000, now: () => now });
  t.after(() => cache.close());
  const made = `cs1.${randomBytes(32).toString('base64url')}`;
  for (let i = 0; i < 3; i++) assert.equal(await cache.session(made), null);
  assert.equal(lookups(), 3);
  const s = await newSession(cache);
  await cache.revokeSession(s.token);
  for (let i = 0; i < 3; i++) assert.equal(await cache.session(s.token), null);
  assert.equal(lookups(), 6);
  assert.equal(cache.size, 0, 'nothing cached but live sessions');
});

test('an expired session is refused at its expiry even though the cache would still believe it', async (t) => {
  let now = 1_000_000;
  const store = new SqliteAccountStore(':memory:', { now: () => now, sessionTtlMs: 3000 });
  const cache = new SessionCachingStore(store, { ttlMs: 60_000, now: () => now });
  t.after(() => cache.close());
  const s = await newSession(cache);
  assert.equal(await cache.session(s.token), s.id);
  now += 2999;
  assert.equal(await cache.session(s.token), s.id);
  now += 1;
  assert.equal(await cache.session(s.token), null, 'expired: the entry never outlives the session');
});

test('a lookup in flight while the session is revoked is not cached (the stolen token does not come back)', async (t) => {
  const store = new SqliteAccountStore(':memory:');
  const cache = new SessionCachingStore(store, { ttlMs: 60_000 });
  t.after(() => cache.close());
  const s = await newSession(cache);
  // The lookup reads the row, then the revocation runs before the lookup's answer arrives.
  const lookup = store.sessionRecord.bind(store);
  let release!: () => void;
  store.sessionRecord = async (token: string) => {
    const r = await lookup(token);
    await new Promise<void>((res) => (release = res));
    return r;
  };
  const pending = cache.session(s.token);
  await new Promise((r) => setImmediate(r));
  assert.equal(await cache.revokeSession(s.token), true);
  release();
  assert.equal(await pending, s.id, 'the check that began before the sign-out may pass');
  store.sessionRecord = lookup;
  assert.equal(await cache.session(s.token), null, 'but it left nothing behind');
  assert.equal(cache.size, 0);
});

test('the cache is bounded and drops the oldest entry first', async (t) => {
  const store = new SqliteAccountStore(':memory:');
  const cache = new SessionCachingStore(store, { ttlMs: 60_000, maxEntries: 3 });
  t.after(() => cache.close());
  const sessions = [];
  for (let i = 0; i < 5; i++) sessions.push(await newSession(cache));
  for (const s of sessions) assert.equal(await cache.session(s.token), s.id);
  assert.equal(cache.size, 3);
  // The two oldest went: asking for them again goes to the store, and they are still live there.
  assert.equal(await cache.session(sessions[0]!.token), sessions[0]!.id);
  assert.equal(cache.size, 3);
});

/** Through the HTTP API: every way an account's owner takes a token away, with the token cached first. */
async function revocationsOverHttp(t: Parameters<typeof tempDir>[0], env: Record<string, string>): Promise<void> {
  const r = await startRelay(t, testConfig(tempDir(t), { COFFER_RELAY_SESSION_CACHE_MS: '60000', ...env }));
  assert.ok(r.relay.accounts instanceof SessionCachingStore);
  const list = (auth: Record<string, string>) => r.inject({ method: 'GET', url: '/v1/blobs', headers: auth });

  // Sign-out: the same token is 401 at the very next request.
  const a = await r.signUp();
  assert.equal((await list(a.auth())).statusCode, 200);
  assert.equal((await r.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: a.auth() })).statusCode, 204);
  assert.equal((await list(a.auth())).statusCode, 401, 'signed out: refused at once');

  // "End other sessions": a thief's cached token goes, the owner's stays.
  const b = await r.signUp();
  const ch = (await r.inject({ method: 'POST', url: '/v1/sessions/challenge', payload: { account: b.account } })).json<{ challenge: string }>().challenge;
  const { signChallenge } = await import('./helpers.js');
  const thief = (await r.inject({ method: 'POST', url: '/v1/sessions', payload: { account: b.account, challenge: ch, signature: signChallenge(b.key, ch) } })).json<{ token: string }>().token;
  const thiefAuth = { authorization: `Bearer ${thief}` };
  assert.equal((await list(thiefAuth)).statusCode, 200);
  assert.equal((await list(b.auth())).statusCode, 200);
  assert.equal((await r.inject({ method: 'DELETE', url: '/v1/sessions', headers: b.auth() })).statusCode, 200);
  assert.equal((await list(thiefAuth)).statusCode, 401, 'the other session is refused at once');
  assert.equal((await list(b.auth())).statusCode, 200, 'the owner keeps theirs');
}

test('HTTP, SQLite: sign-out and "end other sessions" refuse a cached token at the next request', async (t) => {
  await revocationsOverHttp(t, {});
});

test('HTTP, PostgreSQL: sign-out and "end other sessions" refuse a cached token at the next request', { skip: skipPg }, async (t) => {
  await revocationsOverHttp(t, { COFFER_RELAY_ACCOUNT_STORE: 'postgres', COFFER_RELAY_PG_URL: await server!.database(`c${++dbs}`) });
});

test('removing a device key or every other key ends their cached sessions at once', async (t) => {
  const store = new SqliteAccountStore(':memory:');
  const cache = new SessionCachingStore(store, { ttlMs: 60_000 });
  t.after(() => cache.close());
  const s = await newSession(cache);
  const other = Buffer.from(newDeviceKey().publicKey, 'base64url');
  await cache.addKey(s.id, other);
  const viaOther = (await cache.openSession(s.id, { key: other })).token;
  assert.equal(await cache.session(viaOther), s.id);
  assert.equal(await cache.removeKey(s.id, other), true);
  assert.equal(await cache.session(viaOther), null);
  await cache.addKey(s.id, other);
  const again = (await cache.openSession(s.id, { key: other })).token;
  assert.equal(await cache.session(again), s.id);
  assert.equal(await cache.removeOtherKeys(s.id, s.key), 1);
  assert.equal(await cache.session(again), null);
  assert.equal(await cache.session(s.token), s.id, 'the kept key\'s session lives on');
});

/**
 * Two processes on one SQLite file (no revocation watch): a revocation through one is
 * seen by the other when its entry runs out (at most the cache lifetime), not at once.
 * The clock is injected.
 */
async function twoRelays(t: Parameters<typeof tempDir>[0], open: (now: () => number) => Promise<AccountStore>): Promise<void> {
  let now = Date.now();
  const storeA = await open(() => now);
  const storeB = await open(() => now);
  const relayA = new SessionCachingStore(storeA, { ttlMs: 5000, now: () => now });
  const relayB = new SessionCachingStore(storeB, { ttlMs: 5000, now: () => now });
  t.after(async () => {
    await relayA.close();
    await relayB.close();
  });
  const s = await newSession(relayA);
  assert.equal(await relayB.session(s.token), s.id);
  await relayA.revokeSession(s.token);
  assert.equal(await relayA.session(s.token), null, 'refused at once where it was revoked');
  now += 4999;
  assert.equal(await relayB.session(s.token), s.id, 'the other relay still believes it within its cache lifetime');
  now += 1;
  assert.equal(await relayB.session(s.token), null, 'and refuses it once the lifetime is over');
}

test('two relays on one SQLite file: a revocation through one reaches the other within the cache lifetime', async (t) => {
  const path = join(tempDir(t), 'relay.db');
  await twoRelays(t, async (now) => new SqliteAccountStore(path, { now }));
});

/**
 * Polls `check` until it holds (a guard against hangs, not a timing assertion): for up
 * to 20 s, a third of the 60 s cache lifetime, so a pass still means the revocation came
 * by NOTIFY, not by the entry running out (250 tries 20 ms apart, ~5 s, was within
 * reach of a NOTIFY delayed on a loaded machine).
 */
async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
  for (const end = Date.now() + 20_000; ; ) {
    if (await check()) return;
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`never: ${what}`);
}

test('two relays on one PostgreSQL: every kind of revocation through one drops the other\'s cached sessions when it commits (LISTEN/NOTIFY), long before the entry runs out', { skip: skipPg }, async (t) => {
  const url = await server!.database(`c${++dbs}`);
  const a = await PgAccountStore.open({ url });
  const b = await PgAccountStore.open({ url });
  assert.ok(await b.listening());
  const relayA = new SessionCachingStore(a, { ttlMs: 60_000 });
  const { store: bCounted, lookups } = counted(b);
  const relayB = new SessionCachingStore(bCounted, { ttlMs: 60_000 });
  t.after(async () => {
    await relayA.close();
    await relayB.close();
  });
  const s = await newSession(relayA);
  const other = Buffer.from(newDeviceKey().publicKey, 'base64url');
  await relayA.addKey(s.id, other);
  const cachedAtB = async (token: string): Promise<void> => {
    assert.equal(await relayB.session(token), s.id);
    const n = lookups();
    assert.equal(await relayB.session(token), s.id);
    assert.equal(lookups(), n, 'served from relay B\'s cache');
  };
  // Sign-out.
  await cachedAtB(s.token);
  await relayA.revokeSession(s.token);
  await eventually(async () => (await relayB.session(s.token)) === null, 'relay B refuses a session signed out at relay A');
  // Ending other sessions.
  const t1 = (await relayA.openSession(s.id, { key: s.key })).token;
  const t2 = (await relayA.openSession(s.id, { key: s.key })).token;
  await cachedAtB(t1);
  await relayA.revokeOtherSessions(s.id, t2);
  await eventually(async () => (await relayB.session(t1)) === null, 'relay B refuses an ended other session');
  // Removing the device key that opened it.
  const t3 = (await relayA.openSession(s.id, { key: other })).token;
  await cachedAtB(t3);
  await relayA.removeKey(s.id, other);
  await eventually(async () => (await relayB.session(t3)) === null, 'relay B refuses a removed key\'s session');
  // Removing every other key (a password change with revokeOtherDevices).
  await relayA.addKey(s.id, other);
  const t4 = (await relayA.openSession(s.id, { key: other })).token;
  await cachedAtB(t4);
  await relayA.removeOtherKeys(s.id, s.key);
  await eventually(async () => (await relayB.session(t4)) === null, 'relay B refuses the other keys\' sessions');
  assert.equal(await relayB.session(t2), s.id, 'the session kept stays live');
});

test('PostgreSQL: while the revocation watch is down, nothing is cached or believed; caching resumes once it listens again', { skip: skipPg }, async (t) => {
  const url = await server!.database(`c${++dbs}`);
  const inner = await PgAccountStore.open({ url });
  assert.ok(await inner.listening());
  const { store, lookups } = counted(inner);
  const cache = new SessionCachingStore(store, { ttlMs: 60_000 });
  t.after(() => cache.close());
  const s = await newSession(cache);
  assert.equal(await cache.session(s.token), s.id);
  assert.equal(cache.size, 1);
  // Someone (a failover, an operator) kills the listening connection.
  const pgmod = (await import('pg')).default;
  const c = new pgmod.Client({ connectionString: url });
  await c.connect();
  t.after(() => c.end());
  const killed = await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'coffer-relay-revocations' AND datname = current_database()");
  assert.equal(killed.rowCount, 1);
  await eventually(async () => cache.size === 0, 'the cache drops what it held when the watch breaks');
  // Down: a revocation made now could not be heard, so every check asks the store.
  const n = lookups();
  for (let i = 0; i < 3; i++) assert.equal(await cache.session(s.token), s.id);
  assert.equal(lookups(), n + 3, 'every check goes to the store while down');
  assert.equal(cache.size, 0);
  // It listens again on its own (a second later) and caches again.
  await eventually(async () => inner.listening(), 'listening again');
  await cache.session(s.token);
  const m = lookups();
  assert.equal(await cache.session(s.token), s.id);
  assert.equal(lookups(), m, 'cached again');
});
