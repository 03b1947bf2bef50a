// The account stores (issue 11, scale-out): the same contract on SQLite and on a real
// PostgreSQL server (initdb'd here, stopped by PID); two relays sharing PostgreSQL sign
// the same device in and limit it the same way; migrations run once and are recorded.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { SqliteAccountStore, type AccountStore } from '../src/auth/account-store.js';
import pg from 'pg';
import { PgAccountStore } from '../src/auth/pg-store.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { newDeviceKey, signChallenge, startRelay, tempDir, testConfig } from './helpers.js';
import { postgresMissing, startPostgres, type TestPostgres } from './postgres.js';

const skip = process.env.CI ? false : postgresMissing() ?? false;
let server: TestPostgres | undefined;
let dbs = 0;
before(async () => {
  if (!skip) server = await startPostgres();
});
after(async () => {
  await server?.stop();
});
const freshDb = async (): Promise<string> => server!.database(`t${++dbs}`);

const PW = 'correct horse battery staple';
const rule = { perSecond: 0.001, burst: 2 };

async function contract(store: AccountStore): Promise<void> {
  const a = newDeviceKey();
  const b = newDeviceKey();
  const pubA = Buffer.from(a.publicKey, 'base64url');
  const pubB = Buffer.from(b.publicKey, 'base64url');
  const id = (await store.createAccount(pubA, 'scrypt$dummy'))!;
  assert.match(id, /^[a-z0-9]{26}$/);
  assert.equal(await store.createAccount(pubA), null, 'a registered key cannot make another account');
  assert.equal(await store.exists(id), true);
  assert.equal(await store.passwordHash(id), 'scrypt$dummy');
  await store.setPasswordHash(id, 'scrypt$other');
  assert.equal(await store.passwordHash(id), 'scrypt$other');
  assert.equal(await store.addKey(id, pubB), true);
  assert.equal(await store.addKey(id, pubB), false);
  assert.deepEqual((await store.listKeys(id)).map((k) => k.publicKey).sort(), [a.publicKey, b.publicKey].sort());

  // Proofs: a made-up challenge is "no-challenge", a live one wrongly signed "bad-signature".
  assert.equal((await store.proveKey(id, Buffer.alloc(32, 7), Buffer.alloc(64))).result, 'no-challenge');
  let ch = await store.challenge(id);
  assert.equal((await store.proveKey(id, ch.challenge, Buffer.alloc(64, 1))).result, 'bad-signature');
  assert.equal((await store.proveKey(id, ch.challenge, Buffer.from(signChallenge(b.key, Buffer.from(ch.challenge).toString('base64url')), 'base64url'))).result, 'no-challenge', 'single use');
  ch = await store.challenge(id);
  const proof = await store.proveKey(id, ch.challenge, Buffer.from(signChallenge(b.key, Buffer.from(ch.challenge).toString('base64url')), 'base64url'));
  assert.equal(proof.result, 'ok');
  assert.ok(proof.result === 'ok' && proof.key.equals(pubB));
  assert.ok((await store.listKeys(id)).find((k) => k.publicKey === b.publicKey)!.lastUsedAt! > 0);

  // Sessions remember the key that opened them; removing the key ends them.
  const sA = await store.openSession(id, { key: pubA });
  const sB = await store.openSession(id, { key: pubB });
  const sP = await store.openSession(id, { password: true });
  assert.equal(await store.session(sB.token), id);
  assert.ok((await store.sessionKey(sB.token))!.equals(pubB));
  assert.equal(await store.sessionKey(sP.token), null);
  assert.equal(await store.removeKey(id, pubB), true);
  assert.equal(await store.removeKey(id, pubB), false);
  assert.equal(await store.session(sB.token), null, 'the removed key\'s session ended');
  assert.equal(await store.session(sA.token), id);
  assert.equal(await store.revokeSession(sP.token), true);
  assert.equal(await store.session(sP.token), null);
  const sA2 = await store.openSession(id, { key: pubA });
  assert.equal(await store.revokeOtherSessions(id, sA2.token), 1);
  assert.equal(await store.session(sA.token), null);
  assert.equal(await store.session(sA2.token), id);
  await store.addKey(id, pubB);
  assert.equal(await store.removeOtherKeys(id, pubA), 1);
  assert.deepEqual((await store.listKeys(id)).map((k) => k.publicKey), [a.publicKey]);

  // Shared buckets: take, refund, and debt with force.
  assert.equal((await store.take('t', 'k', rule)).wait, 0);
  assert.equal((await store.take('t', 'k', rule)).wait, 0);
  assert.ok((await store.take('t', 'k', rule)).wait > 0);
  await store.refund('t', 'k', rule);
  assert.equal((await store.take('t', 'k', rule)).wait, 0);
  const forced = await store.take('t', 'k', rule, true);
  assert.ok(forced.wait > 0 && forced.tokens < 0, 'force goes into debt');
}

test('account store contract: SQLite', async (t) => {
  const store = new SqliteAccountStore(':memory:');
  t.after(() => store.close());
  await contract(store);
});

test('account store contract: PostgreSQL (a real server)', { skip }, async (t) => {
  const store = await PgAccountStore.open({ url: await freshDb() });
  t.after(() => store.close());
  await contract(store);
});

test('PostgreSQL migrations: applied once under a lock by relays starting together, recorded, re-opening is a no-op', { skip }, async (t) => {
  const url = await freshDb();
  const stores = await Promise.all([PgAccountStore.open({ url }), PgAccountStore.open({ url }), PgAccountStore.open({ url })]);
  t.after(() => Promise.all(stores.map((s) => s.close())));
  for (const s of stores) assert.equal(await s.schemaVersion(), 1);
  const again = await PgAccountStore.open({ url });
  assert.equal(await again.schemaVersion(), 1);
  await again.close();
});

test('PostgreSQL: an unreachable server fails fast with the connect timeout, not a hang', { skip }, async () => {
  const started = Date.now();
  await assert.rejects(PgAccountStore.open({ url: 'postgres://coffer@127.0.0.1:1/none', connectTimeoutMs: 500 }));
  assert.ok(Date.now() - started < 5000);
});

test('two relays on one PostgreSQL: an account made through one signs in through the other, and failures count across both', { skip }, async (t) => {
  const url = await freshDb();
  const mk = async () => {
    const base = testConfig(tempDir(t), { COFFER_RELAY_ACCOUNT_STORE: 'postgres', COFFER_RELAY_PG_URL: url, COFFER_RELAY_SESSION_CACHE_MS: '60000' });
    return startRelay(t, { ...base, limits: { ...base.limits, passwordSignInByAccountAddress: { perSecond: 0.001, burst: 2 } } });
  };
  const [r1, r2] = [await mk(), await mk()];
  assert.equal(r1.relay.accounts!.kind, 'postgres');
  const { key, publicKey } = newDeviceKey();
  const account = (await r1.inject({ method: 'POST', url: '/v1/accounts', payload: { publicKey, password: PW } })).json<{ account: string }>().account;
  // A challenge from relay 1, answered at relay 2.
  const { challenge } = (await r1.inject({ method: 'POST', url: '/v1/sessions/challenge', payload: { account } })).json<{ challenge: string }>();
  const s = await r2.inject({ method: 'POST', url: '/v1/sessions', payload: { account, challenge, signature: signChallenge(key, challenge) } });
  assert.equal(s.statusCode, 200);
  const token = s.json<{ token: string }>().token;
  assert.equal((await r1.inject({ method: 'GET', url: '/v1/blobs', headers: { authorization: `Bearer ${token}` } })).statusCode, 200, 'the session works at relay 1');
  // Failed passwords from one address: one at each relay, then both refuse it.
  const attempt = (r: typeof r1, password: string) => r.inject({ method: 'POST', url: '/v1/sessions/password', remoteAddress: '10.9.0.1', payload: { account, password } });
  assert.equal((await attempt(r1, 'wrong guess 1xx')).statusCode, 401);
  assert.equal((await attempt(r2, 'wrong guess 2xx')).statusCode, 401);
  assert.equal((await attempt(r1, PW)).statusCode, 429, 'limited consistently across relays');
  assert.equal((await attempt(r2, PW)).statusCode, 429);
  // Sign-out at relay 2 ends the session at relay 1, which had it in its session cache:
  // relay 1 hears the revocation (LISTEN/NOTIFY) a moment after the commit, long before
  // its cache entry would run out (60 s here).
  assert.equal((await r2.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: { authorization: `Bearer ${token}` } })).statusCode, 204);
  // Polled for up to 20 s (a third of the cache lifetime; 100 tries 20 ms apart, ~2 s,
  // was within reach of a NOTIFY delayed on a loaded machine).
  let status = 0;
  for (const end = Date.now() + 20_000; status !== 401 && Date.now() < end; ) {
    if (status !== 0) await new Promise((r) => setTimeout(r, 20));
    status = (await r1.inject({ method: 'GET', url: '/v1/blobs', headers: { authorization: `Bearer ${token}` } })).statusCode;
  }
  assert.equal(status, 401);
});

test('config: the postgres store needs a postgres:// URL; SQLite stays the default', () => {
  assert.equal(loadConfig({ env: {} }).accountStore.backend, 'sqlite');
  assert.throws(() => loadConfig({ env: { COFFER_RELAY_ACCOUNT_STORE: 'postgres' } }), ConfigError);
  assert.throws(() => loadConfig({ env: { COFFER_RELAY_ACCOUNT_STORE: 'mysql' } }), ConfigError);
  const c = loadConfig({ env: { COFFER_RELAY_ACCOUNT_STORE: 'postgres', COFFER_RELAY_PG_URL: 'postgres://u@db:5432/coffer', COFFER_RELAY_PG_POOL_SIZE: '4' } });
  assert.deepEqual(c.accountStore, { backend: 'postgres', url: 'postgres://u@db:5432/coffer', poolSize: 4, statementTimeoutMs: 5000, connectTimeoutMs: 5000 });
});

test('PostgreSQL: a session check (every forwarded vault message) is one statement, named so each connection prepares it once; revocation still takes effect at once', { skip }, async (t) => {
  const store = await PgAccountStore.open({ url: await freshDb() });
  t.after(() => store.close());
  const key = Buffer.from(newDeviceKey().publicKey, 'base64url');
  const id = (await store.createAccount(key))!;
  const { token } = await store.openSession(id, { key });
  const seen: unknown[] = [];
  const query = pg.Pool.prototype.query;
  pg.Pool.prototype.query = function (this: pg.Pool, ...args: unknown[]) {
    seen.push(args[0]);
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  t.after(() => void (pg.Pool.prototype.query = query));
  for (let i = 0; i < 5; i++) assert.equal(await store.session(token), id);
  assert.equal(seen.length, 5, 'one statement per session check');
  for (const q of seen) assert.equal((q as { name?: string }).name, 'coffer-relay-session');
  assert.equal(await store.revokeSession(token), true);
  assert.equal(await store.session(token), null, 'a revoked session fails at the next check');
});

test('the development PostgreSQL never uses a server it did not start: a port taken meanwhile by another server is passed over for another', { skip }, async () => {
  // The first port tried is the running server's (as if another process took the free
  // port picked before this postgres could bind it): the server already there accepts
  // connections, but its data directory is not this cluster's; this postgres cannot bind
  // the port and exits; the next port is used.
  const taken = Number(new URL(server!.url).port);
  const tried: number[] = [];
  const second = await startPostgres({
    pickPort: async () => {
      if (tried.length === 0) {
        tried.push(taken);
        return taken;
      }
      const { createServer } = await import('node:net');
      const s = createServer().listen(0, '127.0.0.1');
      await new Promise((r) => s.once('listening', r));
      const port = (s.address() as { port: number }).port;
      await new Promise((r) => s.close(r));
      tried.push(port);
      return port;
    },
  });
  try {
    assert.equal(tried.length, 2, `ports tried: ${tried.join(', ')}`);
    assert.notEqual(new URL(second.url).port, String(taken));
    const c = new pg.Client({ connectionString: second.url });
    await c.connect();
    const mine = (await c.query<{ data_directory: string }>('SHOW data_directory')).rows[0]!.data_directory;
    await c.end();
    const c1 = new pg.Client({ connectionString: server!.url });
    await c1.connect();
    const first = (await c1.query<{ data_directory: string }>('SHOW data_directory')).rows[0]!.data_directory;
    await c1.end();
    assert.notEqual(mine, first, 'two clusters, each its own server');
  } finally {
    await second.stop();
  }
});
