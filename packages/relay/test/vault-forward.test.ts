// Forwarding to the vault fleet (spec/relay-api.md §2) toward broken upstreams: a node
// that is down, slow, or answering 5xx; failover to the next node; link MAC and account
// header on every attempt; vault errors passed through. (Stand-in servers here; the
// real coffer-vault path is in e2e.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RELAY_AUTH_HEADER, verifyRelayAuth } from '@coffer/protocol';
import { loadLinkKey } from '@coffer/protocol/node';
import { deadUrl, standIn, startRelay, tempDir, testConfig } from './helpers.js';

const code = (r: { json: <T>() => T }) => r.json<{ error: { code: string } }>().error.code;
const BODY = Buffer.alloc(603, 7);

async function relayTo(t: Parameters<typeof tempDir>[0], nodes: string[], timing = { attempt: '400', deadline: '3000' }) {
  const dir = tempDir(t);
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

test('a vault node that is down: 503 vault-unavailable quickly', async (t) => {
  const { send } = await relayTo(t, [await deadUrl(), await deadUrl()]);
  const started = Date.now();
  const res = await send();
  assert.equal(res.statusCode, 503);
  assert.equal(code(res), 'vault-unavailable');
  assert.ok(res.json<{ error: { retryAfter: number } }>().error.retryAfter >= 1);
  assert.ok(Date.now() - started < 3000, 'no hang');
});

test('a slow vault node: per-attempt timeout, then 503 within the deadline', async (t) => {
  const slow = await standIn(t, () => {}); // never answers
  const { send } = await relayTo(t, [slow.url], { attempt: '300', deadline: '2000' });
  const started = Date.now();
  const res = await send();
  assert.equal(code(res), 'vault-unavailable');
  assert.ok(Date.now() - started < 5000);
});

test('failover: down, slow and 503 nodes are skipped for a working one', async (t) => {
  let key: Uint8Array = new Uint8Array(32);
  const seen: { account?: string; ok?: string }[] = [];
  const slow = await standIn(t, () => {});
  const failing = await standIn(t, (_q, res) => void res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"code":"store-unavailable","message":"x","retry":true}}'));
  const good = await standIn(t, (req, res, body) => void goodVault(() => key, seen)(req, res, body));
  const { send, linkKey } = await relayTo(t, [await deadUrl(), slow.url, failing.url, good.url], { attempt: '300', deadline: '5000' });
  key = linkKey;
  const first = await send();
  assert.equal(first.statusCode, 200);
  assert.equal(failing.hits(), 1);
  // The relay now prefers the node that worked: no more time lost on the broken ones.
  const started = Date.now();
  for (let i = 0; i < 5; i++) assert.equal((await send()).statusCode, 200);
  assert.ok(Date.now() - started < 2000);
  assert.equal(failing.hits(), 1);
  assert.equal(seen.length, 6);
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
