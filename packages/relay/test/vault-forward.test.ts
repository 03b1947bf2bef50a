// Forwarding to the vault fleet (spec/relay-api.md §2) toward broken upstreams: a node
// that is down, slow, or answering 5xx; failover to the next node; link MAC and account
// header on every attempt; vault errors passed through. Stand-in servers where they make
// a behaviour the real vault can't be made to show on demand (a node that never answers
// at all, garbage bodies, arbitrary 4xx/5xx bodies, a node that records what it got);
// real coffer-vault processes for a stopped node (SIGSTOP), a node with another link key
// and a real 5xx passed through (at the end of this file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, parseFleetKeyBundle, RELAY_AUTH_HEADER, VaultClient, verifyRelayAuth, type FleetKey } from '@coffer/protocol';
import { loadLinkKey } from '@coffer/protocol/node';
import { deadUrl, standIn, startChild, startRelay, startVault, tempDir, testConfig, VAULT_MAIN, writeLinkKey, type TestRelay } from './helpers.js';

const code = (r: { json: <T>() => T }) => r.json<{ error: { code: string } }>().error.code;
const BODY = Buffer.alloc(603, 7);

// Generous by default: a working node must never miss its attempt on a loaded machine.
// Tests where a slow node is the point set short ones.
async function relayTo(t: Parameters<typeof tempDir>[0], nodes: string[], timing = { attempt: '10000', deadline: '30000' }, dir = tempDir(t)) {
  const config = testConfig(dir, { COFFER_RELAY_VAULT_NODES: nodes.join(','), COFFER_RELAY_VAULT_ATTEMPT_TIMEOUT_MS: timing.attempt, COFFER_RELAY_VAULT_DEADLINE_MS: timing.deadline });
  const r = await startRelay(t, config);
  const dev = await r.signUp();
  const send = () => r.inject({ method: 'POST', url: '/v1/vault', headers: { ...dev.auth(), 'content-type': 'application/octet-stream' }, payload: BODY });
  return { r, dev, send, linkKey: loadLinkKey(config.linkKeyFile) };
}

/** A stand-in vault that checks the link MAC like the real one and answers 560 bytes. */
function goodVault(linkKey: () => Uint8Array, seen: { account?: string; ok?: string }[]) {
  return async (req: IncomingMessage, res: ServerResponse, body: Buffer) => {
    const account = String(req.headers['coffer-account']);
    const ok = await verifyRelayAuth(linkKey(), req.headers[RELAY_AUTH_HEADER] as string, { method: 'POST', path: req.url!, account, body }, Date.now());
    seen.push({ account, ok });
    if (ok !== 'ok') return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"code":"relay-auth"}}');
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(Buffer.alloc(560, 9));
  };
}

test('forwards the bytes with the account and a valid link MAC; answers unchanged', async (t) => {
  let key: Uint8Array = new Uint8Array(32);
  const seen: { account?: string; ok?: string }[] = [];
  const v = await standIn(t, (req, res, body) => void goodVault(() => key, seen)(req, res, body));
  const { send, dev, linkKey } = await relayTo(t, [v.url]);
  key = linkKey;
  const res = await send();
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.rawPayload, Buffer.alloc(560, 9));
  assert.deepEqual(seen, [{ account: `local:${dev.account}`, ok: 'ok' }]);
});

test('one log line per vault message: route, status, lengths and node; no bytes, no token, no second line', async (t) => {
  let key: Uint8Array = new Uint8Array(32);
  const seen: { account?: string; ok?: string }[] = [];
  const v = await standIn(t, (req, res, body) => void goodVault(() => key, seen)(req, res, body));
  const lines: string[] = [];
  const config = testConfig(tempDir(t), { COFFER_RELAY_VAULT_NODES: v.url });
  const r = await startRelay(t, config, { logger: { level: 'info', stream: { write: (l: string) => void lines.push(l) } } });
  key = loadLinkKey(config.linkKeyFile);
  const dev = await r.signUp();
  lines.length = 0;
  const body = Buffer.alloc(603, 0x5a);
  const res = await r.inject({ method: 'POST', url: '/v1/vault', headers: { ...dev.auth(), 'content-type': 'application/octet-stream' }, payload: body });
  assert.equal(res.statusCode, 200);
  const entries = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(entries.length, 1, `one line, got: ${lines.join('')}`);
  const e = entries[0]!;
  assert.equal(e.msg, 'request');
  assert.equal(e.method, 'POST');
  assert.equal(e.route, '/v1/vault');
  assert.equal(e.statusCode, 200);
  assert.equal(e.account, `local:${dev.account}`);
  assert.equal(e.bodyBytes, 603);
  assert.equal(e.responseBytes, 560);
  assert.equal(e.vaultStatus, 200);
  assert.equal(e.node, new URL(v.url).host);
  assert.equal(typeof e.ms, 'number');
  const log = lines.join('');
  for (const secret of [dev.token, dev.token.slice(4), body.toString('base64'), Buffer.alloc(560, 9).toString('base64'), body.toString('hex').slice(0, 64)]) assert.ok(!log.includes(secret), `log leaks ${secret.slice(0, 12)}…`);
});

test('the request to the vault node: one Host (the node\'s host and port), the account, the link MAC, the exact length; kept alive', async (t) => {
  let key: Uint8Array = new Uint8Array(32);
  const seen: { account?: string; ok?: string }[] = [];
  const raw: string[][] = [];
  const check = goodVault(() => key, seen);
  const v = await standIn(t, (req, res, body) => {
    raw.push(req.rawHeaders.map((h, i) => (i % 2 === 0 ? h.toLowerCase() : h)));
    void check(req, res, body);
  });
  const { send, linkKey } = await relayTo(t, [v.url]);
  key = linkKey;
  assert.equal((await send()).statusCode, 200);
  assert.equal((await send()).statusCode, 200);
  assert.equal(raw.length, 2);
  for (const h of raw) {
    const names = h.filter((_, i) => i % 2 === 0);
    const value = (n: string) => h[h.indexOf(n) + 1];
    assert.deepEqual(names.filter((n) => n === 'host'), ['host'], `one Host header: ${names.join(', ')}`);
    assert.equal(value('host'), new URL(v.url).host);
    assert.equal(value('content-length'), String(BODY.length));
    assert.equal(value('content-type'), 'application/octet-stream');
    assert.equal(value('connection'), 'keep-alive');
    assert.deepEqual([...new Set(names)].sort(), ['coffer-account', RELAY_AUTH_HEADER, 'connection', 'content-length', 'content-type', 'host'].sort());
  }
  assert.deepEqual(seen.map((s) => s.ok), ['ok', 'ok']);
});

test('a vault node given by an IPv6 address ([::1]) is reached', async (t) => {
  let key: Uint8Array = new Uint8Array(32);
  const seen: { account?: string; ok?: string }[] = [];
  const v = await standIn(t, (req, res, body) => void goodVault(() => key, seen)(req, res, body));
  // The same stand-in, listening on ::1 too (skipped where the machine has no IPv6 loopback).
  const { createServer: createHttpServer } = await import('node:http');
  const six = createHttpServer((req, res) => v.server.emit('request', req, res));
  const up = await new Promise<boolean>((resolve) => {
    six.once('error', () => resolve(false));
    six.listen(0, '::1', () => resolve(true));
  });
  if (!up) return t.skip('no IPv6 loopback here');
  t.after(() => new Promise<void>((r) => six.close(() => r())));
  const port = (six.address() as { port: number }).port;
  const { send, dev, linkKey } = await relayTo(t, [`http://[::1]:${port}`]);
  key = linkKey;
  const res = await send();
  assert.equal(res.statusCode, 200);
  assert.deepEqual(seen, [{ account: `local:${dev.account}`, ok: 'ok' }]);
});

test('a kept-alive connection the vault node closed while idle: the message goes once more on a fresh connection, not a 503', async (t) => {
  // The stand-in takes one request per connection and drops the connection at the next
  // one without answering: what a node's keep-alive timeout racing our reuse looks like.
  const served = new WeakMap<object, number>();
  let dropped = 0;
  const v = await standIn(t, (req, res) => {
    const n = (served.get(req.socket) ?? 0) + 1;
    served.set(req.socket, n);
    if (n > 1) {
      dropped++;
      req.socket.destroy();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(Buffer.alloc(560, 9));
  });
  const { send } = await relayTo(t, [v.url]);
  for (let i = 0; i < 3; i++) {
    const res = await send();
    assert.equal(res.statusCode, 200, `message ${i}: ${res.body}`);
    assert.deepEqual(res.rawPayload, Buffer.alloc(560, 9));
  }
  assert.equal(dropped, 2, 'messages 2 and 3 first met a dropped connection');
});

test('a vault node closing the connection in the middle of its answer: the next node answers; alone, 503 vault-unavailable', async (t) => {
  const cut = await standIn(t, (_q, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 560 });
    res.write(Buffer.alloc(100, 1));
    setTimeout(() => res.socket?.destroy(), 20);
  });
  const good = await standIn(t, (_q, res) => void res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(Buffer.alloc(560, 9)));
  const both = await relayTo(t, [cut.url, good.url]);
  const res = await both.send();
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.rawPayload, Buffer.alloc(560, 9), 'the whole answer of the good node, nothing of the cut one');
  const alone = await relayTo(t, [cut.url]);
  const refused = await alone.send();
  assert.equal(refused.statusCode, 503);
  assert.equal(code(refused), 'vault-unavailable');
});

test('a vault node that is down: 503 vault-unavailable quickly', async (t) => {
  const { send } = await relayTo(t, [await deadUrl(), await deadUrl()]);
  const started = Date.now();
  const res = await send();
  assert.equal(res.statusCode, 503);
  assert.equal(code(res), 'vault-unavailable');
  assert.ok(res.json<{ error: { retryAfter: number } }>().error.retryAfter >= 1);
  // Refused connections answer at once: far inside one attempt timeout (10 s), let alone the deadline.
  assert.ok(Date.now() - started < 8000, 'no waiting on a refused connection');
});

test('a slow vault node: per-attempt timeout, then 503 within the deadline', async (t) => {
  const slow = await standIn(t, () => {}); // never answers
  const { send } = await relayTo(t, [slow.url], { attempt: '300', deadline: '2000' });
  const started = Date.now();
  const res = await send();
  assert.equal(code(res), 'vault-unavailable');
  assert.equal(slow.hits(), 1, 'one attempt, then the deadline');
  assert.ok(Date.now() - started < 15_000, 'the answer comes (a hang would not)');
});

test('failover: down, slow and 503 nodes are skipped for a working one', async (t) => {
  let key: Uint8Array = new Uint8Array(32);
  const seen: { account?: string; ok?: string }[] = [];
  const slow = await standIn(t, () => {});
  const failing = await standIn(t, (_q, res) => void res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"code":"store-unavailable","message":"x","retry":true}}'));
  const good = await standIn(t, (req, res, body) => void goodVault(() => key, seen)(req, res, body));
  // The slow node costs one attempt (1 s): the good one gets the rest of a long deadline.
  const { send, linkKey } = await relayTo(t, [await deadUrl(), slow.url, failing.url, good.url], { attempt: '1000', deadline: '30000' });
  key = linkKey;
  const first = await send();
  assert.equal(first.statusCode, 200);
  assert.equal(slow.hits(), 1);
  assert.equal(failing.hits(), 1);
  // The relay now prefers the node that worked: the broken ones are not tried again.
  for (let i = 0; i < 5; i++) assert.equal((await send()).statusCode, 200);
  assert.equal(slow.hits(), 1);
  assert.equal(failing.hits(), 1);
  assert.equal(seen.length, 6);
});

test('a fleet member that does not lead (503 not-leader) is skipped for the leader, which is then kept', async (t) => {
  let key: Uint8Array = new Uint8Array(32);
  const seen: { account?: string; ok?: string }[] = [];
  const follower = await standIn(t, (_q, res) => void res.writeHead(503, { 'content-type': 'application/json', 'coffer-vault-leader': '0123456789abcdef' }).end('{"error":{"code":"not-leader","message":"x","retry":true}}'));
  const leader = await standIn(t, (req, res, body) => void goodVault(() => key, seen)(req, res, body));
  const { send, linkKey } = await relayTo(t, [follower.url, leader.url]);
  key = linkKey;
  for (let i = 0; i < 4; i++) assert.equal((await send()).statusCode, 200);
  assert.equal(follower.hits(), 1, 'asked once, then the leader is preferred');
  assert.equal(seen.length, 4);
});

test('a fleet between leaders (every node 503 not-leader for a while): passes again until one leads, within the deadline', async (t) => {
  let key: Uint8Array = new Uint8Array(32);
  const seen: { account?: string; ok?: string }[] = [];
  const notLeader = (_q: IncomingMessage, res: ServerResponse) => void res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"code":"not-leader","message":"x","retry":true}}');
  // b leads 800 ms after the message is sent, and not before it was asked once: the
  // clock starts at the send, not before the relay is started (which can take 800 ms on
  // a loaded machine; b then led at its first ask, and the passes were not repeated).
  let leadsFrom = Infinity;
  let bAsked = 0;
  const a = await standIn(t, notLeader);
  const b = await standIn(t, (req, res, body) => (++bAsked === 1 || Date.now() < leadsFrom ? notLeader(req, res) : void goodVault(() => key, seen)(req, res, body)));
  const { send, linkKey } = await relayTo(t, [a.url, b.url]);
  key = linkKey;
  leadsFrom = Date.now() + 800;
  assert.equal((await send()).statusCode, 200);
  assert.ok(a.hits() >= 2 && b.hits() >= 2, `passed over both nodes more than once (${a.hits()}, ${b.hits()})`);
});

test('every node answering a retryable vault error: that error is passed through', async (t) => {
  const body = '{"error":{"code":"store-unavailable","message":"the record store is unavailable; retry","retry":true}}';
  const a = await standIn(t, (_q, res) => void res.writeHead(503, { 'content-type': 'application/json' }).end(body));
  const b = await standIn(t, (_q, res) => void res.writeHead(503, { 'content-type': 'application/json' }).end(body));
  const { send } = await relayTo(t, [a.url, b.url]);
  const res = await send();
  assert.equal(res.statusCode, 503);
  assert.equal(code(res), 'store-unavailable');
  assert.equal(a.hits() + b.hits(), 2);
});

test('vault 4xx errors are passed through, not retried elsewhere', async (t) => {
  const a = await standIn(t, (_q, res) => void res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"code":"undecryptable","message":"m","retry":false}}'));
  const b = await standIn(t, (_q, res) => void res.writeHead(200).end('should not be reached'));
  const { send } = await relayTo(t, [a.url, b.url]);
  const res = await send();
  assert.equal(res.statusCode, 400);
  assert.equal(code(res), 'undecryptable');
  assert.equal(b.hits(), 0);
});

test('vault error details never reach the client: the code, under the relay\'s own message', async (t) => {
  const upstream = '{"error":{"code":"undecryptable","message":"HPKE open failed for key 0011","detail":"stack: at open (/srv/vault/hpke.js:12)","retry":false,"retryAfter":2}}';
  const a = await standIn(t, (_q, res) => void res.writeHead(400, { 'content-type': 'application/json' }).end(upstream));
  const { send } = await relayTo(t, [a.url]);
  const res = await send();
  assert.equal(res.statusCode, 400);
  assert.deepEqual(res.json(), { error: { code: 'undecryptable', message: 'the vault refused the request (undecryptable)', retryAfter: 2 } });
  const garbage = await standIn(t, (_q, res) => void res.writeHead(400, { 'content-type': 'text/html' }).end('<html>internal path /srv/vault</html>'));
  const other = await relayTo(t, [garbage.url]);
  const g = await other.send();
  assert.equal(code(g), 'vault-unavailable');
  assert.doesNotMatch(g.body, /srv/);
});

test('a node refusing our link MAC (wrong key) is skipped; if all do, 503 (not a client 401)', async (t) => {
  const seen: { account?: string; ok?: string }[] = [];
  const wrongKey = await standIn(t, (req, res, body) => void goodVault(() => new Uint8Array(32).fill(1), seen)(req, res, body));
  const { send } = await relayTo(t, [wrongKey.url]);
  const res = await send();
  assert.equal(res.statusCode, 503);
  assert.equal(code(res), 'vault-unavailable');
  assert.equal(seen[0]!.ok, 'bad-mac');
});

// ---- Real coffer-vault nodes -------------------------------------------------------

/** A VaultClient for `dev` whose transport is the in-process relay. */
function clientThrough(r: TestRelay, dev: { account: string; auth: () => Record<string, string> }, fleetKey: FleetKey): VaultClient {
  return new VaultClient({
    fleetKey,
    account: `local:${dev.account}`,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      const res = await r.inject({ method: 'POST', url: '/v1/vault', headers: { ...dev.auth(), 'content-type': 'application/octet-stream' }, payload: Buffer.from(bytes) });
      if (res.statusCode !== 200) throw new Error(`relay answered ${res.statusCode}: ${res.body}`);
      return new Uint8Array(res.rawPayload);
    },
  });
}

const K = new Uint8Array(32).fill(3);

test('real vaults: a node stopped with SIGSTOP costs one attempt; the other real node answers', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const linkKeyFile = writeLinkKey(dir);
  // Two processes on one data directory: one fleet key and one SQLite record store.
  const a = await startVault(join(dir, 'vault'), linkKeyFile);
  t.after(() => a.stop());
  const b = await startVault(join(dir, 'vault'), linkKeyFile);
  t.after(() => b.stop());
  const { r, dev } = await relayTo(t, [a.url, b.url], { attempt: '2000', deadline: '30000' }, dir);
  const c = clientThrough(r, dev, a.fleetKey);
  assert.equal((await c.register('pw', K)).outcome, 'ok');
  // a is preferred (it answered). Stop it: it accepts connections (the kernel does) but
  // never answers, the hardest kind of slow node.
  process.kill(a.child.pid!, 'SIGSTOP');
  t.after(() => void (a.child.exitCode === null && process.kill(a.child.pid!, 'SIGCONT')));
  const recovered = await c.recover('pw');
  assert.equal(recovered.outcome, 'ok', 'recovered through the running node');
  const metrics = (await r.relay.admin.inject({ method: 'GET', url: '/metrics' })).body;
  assert.match(metrics, /coffer_relay_vault_attempts_total\{node="[^"]*",outcome="timeout"\} [1-9]/, 'the stopped node timed out');
  process.kill(a.child.pid!, 'SIGCONT');
});

test('real vaults: a node holding another link key refuses (relay-auth) and is skipped; if it is the only one, 503', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const linkKeyFile = writeLinkKey(dir);
  const otherKeyFile = writeLinkKey(tempDir(t), '99'.repeat(32));
  const wrong = await startVault(join(dir, 'wrong'), otherKeyFile);
  t.after(() => wrong.stop());
  const good = await startVault(join(dir, 'good'), linkKeyFile);
  t.after(() => good.stop());
  const both = await relayTo(t, [wrong.url, good.url], undefined, dir);
  assert.equal((await clientThrough(both.r, both.dev, good.fleetKey).register('pw', K)).outcome, 'ok', 'answered by the node with our key');
  const metrics = (await both.r.relay.admin.inject({ method: 'GET', url: '/metrics' })).body;
  assert.match(metrics, /coffer_relay_vault_attempts_total\{node="[^"]*",outcome="relay-auth"\} 1/, 'the wrong-key node was tried and refused our link MAC');
  // Only the wrong-key node: the client gets 503 vault-unavailable, never that node's 401.
  const only = await relayTo(t, [wrong.url], undefined, tempDir(t));
  const res = await only.send();
  assert.equal(res.statusCode, 503);
  assert.equal(code(res), 'vault-unavailable');
});

test('real vault: its 503 store-unavailable is passed through with the code only', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const linkKeyFile = writeLinkKey(dir);
  // A real node whose etcd store has no endpoint that answers: every request is its 503.
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((res) => srv.close(() => res()));
  const vault = await startChild(
    VAULT_MAIN,
    {
      COFFER_VAULT_DATA_DIR: join(dir, 'vault'),
      COFFER_VAULT_PORT: '0',
      COFFER_VAULT_LOG_LEVEL: 'warn',
      COFFER_VAULT_LINK_KEY_FILE: linkKeyFile,
      COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1',
      COFFER_VAULT_STORE: 'etcd',
      COFFER_VAULT_ETCD_ENDPOINTS: `http://127.0.0.1:${port}`,
      COFFER_VAULT_GROUP_SIZE: '1', // one vault on etcd: a one-node rollback-protection group
    },
    'coffer-vault',
  );
  t.after(() => vault.stop());
  const bundle = spawnSync(process.execPath, [VAULT_MAIN, 'bundle'], { env: { ...process.env, COFFER_VAULT_DATA_DIR: join(dir, 'vault') }, encoding: 'utf8' });
  assert.equal(bundle.status, 0, bundle.stderr);
  const fleetKey = (await parseFleetKeyBundle(bundle.stdout)).keys[0]!;
  const { r, dev } = await relayTo(t, [vault.url], undefined, dir);
  const res = await r.inject({ method: 'POST', url: '/v1/vault', headers: { ...dev.auth(), 'content-type': 'application/octet-stream' }, payload: await sealedStatus(fleetKey, `local:${dev.account}`) });
  assert.equal(res.statusCode, 503);
  assert.deepEqual(res.json(), { error: { code: 'store-unavailable', message: 'the vault refused the request (store-unavailable)' } });
  assert.doesNotMatch(res.body, /127\.0\.0\.1|connection refused|etcd/);
});

/** One sealed `status` request's bytes for `account`, captured from a real client. */
async function sealedStatus(fleetKey: FleetKey, account: string): Promise<Buffer> {
  let captured: Uint8Array | undefined;
  await new VaultClient({
    fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      captured = bytes;
      throw new Error('captured');
    },
  })
    .status()
    .catch(() => undefined);
  return Buffer.from(captured!);
}
