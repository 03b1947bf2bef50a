// Issue 8 §2: whoever runs the front end (holds the relay link key) sees no metrics on
// the request listener, and neither the metrics nor the per-request log lines tell a
// right password from a wrong one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, RELAY_AUTH_HEADER, relayAuthHeader, VaultClient } from '@coffer/protocol';
import { KEY_K, testConfig } from './helpers/vault-harness.js';
import { assembleVault, type RunningVault } from '../src/server/start.js';
import { loadConfig, ConfigError } from '../src/server/config.js';
import { loadLinkKey } from '../src/server/relay-auth.js';

async function relayVault(t: { after: (fn: () => Promise<void>) => void }, lines: string[]): Promise<{ vault: RunningVault; key: Uint8Array }> {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-metrics-'));
  const linkKeyFile = join(dir, 'link.key');
  const logger = { level: 'info', stream: { write: (line: string) => void lines.push(line) } };
  const vault = await assembleVault({ ...testConfig(dir), linkKeyFile }, { createIfMissing: true, warn: () => {}, logger });
  t.after(async () => {
    await vault.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { vault, key: loadLinkKey(linkKeyFile) };
}

function relayClient(vault: RunningVault, key: Uint8Array, account: string): VaultClient {
  return new VaultClient({
    fleetKey: vault.fleet.fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      const auth = await relayAuthHeader(key, { method: 'POST', path: '/v1/request', account, body: bytes }, Date.now());
      const res = await vault.app.inject({ method: 'POST', url: '/v1/request', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account, [RELAY_AUTH_HEADER]: auth }, payload: Buffer.from(bytes) });
      assert.equal(res.statusCode, 200, res.body);
      return new Uint8Array(res.rawPayload);
    },
  });
}

/** Series → value, without the timing series (histogram buckets and sums). */
async function scrape(vault: RunningVault): Promise<Map<string, number>> {
  const res = await vault.admin.inject({ method: 'GET', url: '/metrics' });
  assert.equal(res.statusCode, 200);
  const out = new Map<string, number>();
  for (const line of res.body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    const series = line.slice(0, i);
    if (/^coffer_vault_request_duration_seconds_(bucket|sum)/.test(series)) continue;
    out.set(series, Number(line.slice(i + 1)));
  }
  return out;
}

function delta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of after) if (v !== (before.get(k) ?? 0)) d[k] = v - (before.get(k) ?? 0);
  return d;
}

/** Log lines without what differs by timing or sequence alone. */
function normalized(lines: string[]): unknown[] {
  return lines.map((l) => {
    const { time: _t, ms: _ms, reqId: _r, pid: _p, hostname: _h, ...rest } = JSON.parse(l) as Record<string, unknown>;
    return rest;
  });
}

test('the relay, holding the link key, finds no metrics on the request listener; the admin listener has them', async (t) => {
  const { vault, key } = await relayVault(t, []);
  for (const path of ['/metrics', '/metrics/', '/metrics?x=1']) {
    const auth = await relayAuthHeader(key, { method: 'GET', path, account: 'local:alice', body: new Uint8Array(0) }, Date.now());
    const res = await vault.app.inject({ method: 'GET', url: path, headers: { 'coffer-account': 'local:alice', [RELAY_AUTH_HEADER]: auth } });
    assert.equal(res.statusCode, 404, path);
    assert.doesNotMatch(res.body, /coffer_vault_/);
  }
  const admin = await vault.admin.inject({ method: 'GET', url: '/metrics' });
  assert.equal(admin.statusCode, 200);
  assert.match(admin.body, /coffer_vault_guesses_counted_total 0/);
  // The admin listener serves metrics and health only: no request endpoint there.
  assert.equal((await vault.admin.inject({ method: 'POST', url: '/v1/request', payload: 'x' })).statusCode, 404);
});

test('the admin listener has its own address: default request port + 1 on 127.0.0.1, never the request listener', () => {
  assert.deepEqual(loadConfig({ env: {} }).admin, { host: '127.0.0.1', port: 7442 });
  assert.deepEqual(loadConfig({ env: { COFFER_VAULT_HOST: '10.0.0.5', COFFER_VAULT_PORT: '9000' } }).admin, { host: '127.0.0.1', port: 9001 });
  assert.deepEqual(loadConfig({ env: { COFFER_VAULT_PORT: '0' } }).admin, { host: '127.0.0.1', port: 0 });
  assert.deepEqual(loadConfig({ env: { COFFER_VAULT_ADMIN_HOST: '10.9.9.9', COFFER_VAULT_ADMIN_PORT: '9100' } }).admin, { host: '10.9.9.9', port: 9100 });
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_PORT: '9000', COFFER_VAULT_ADMIN_PORT: '9000' } }), ConfigError);
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_ADMIN_PORT: 'x' } }), ConfigError);
});

test('a right and a wrong login leave the same metric series and the same log lines, apart from timing', async (t) => {
  const lines: string[] = [];
  const { vault, key } = await relayVault(t, lines);
  const alice = relayClient(vault, key, 'local:alice');
  assert.equal((await alice.register('correct horse battery', KEY_K)).outcome, 'ok');

  const s0 = await scrape(vault);
  lines.length = 0;
  assert.equal((await alice.recover('wrong guess')).outcome, 'wrong-password');
  const wrongLines = normalized(lines);
  const s1 = await scrape(vault);
  lines.length = 0;
  assert.equal((await alice.recover('correct horse battery')).outcome, 'ok');
  const rightLines = normalized(lines);
  const s2 = await scrape(vault);

  const wrong = delta(s0, s1);
  const right = delta(s1, s2);
  assert.deepEqual(right, wrong);
  assert.ok(Object.keys(wrong).length > 0, 'the logins were counted');
  for (const series of Object.keys(wrong)) assert.doesNotMatch(series, /wrong-password|outcome=|"ok"/, series);
  assert.deepEqual(rightLines, wrongLines);
  assert.equal(wrongLines.length, 2, 'one line per request (login-start, login-finish)');
  for (const l of wrongLines) {
    const line = l as Record<string, unknown>;
    assert.equal(line.account, 'local:alice');
    assert.equal('outcome' in line || 'erased' in line || 'guessCounted' in line, false, JSON.stringify(line));
  }
});
