// Relay→vault link authentication (spec/relay-api.md §2): with a link key configured,
// /v1/request refuses a missing, wrong, stale or replayed-for-another-account MAC, and a
// request replayed with its own header; and a
// vault with a data directory refuses to serve without a link key unless the test-only
// opt-out is set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, RELAY_AUTH_HEADER, relayAuthHeader, VaultClient } from '@coffer/protocol';
import { testConfig, KEY_K } from './helpers/vault-harness.js';
import { assembleVault } from '../src/server/start.js';
import { ConfigError, loadConfig } from '../src/server/config.js';
import { runVaultCli } from './helpers/child-vault.js';
import { loadLinkKey } from '../src/server/relay-auth.js';

test('link key: created once (0600, 64 hex), reused; embedded default only', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-link-'));
  try {
    const file = join(dir, 'sub', 'link.key');
    const a = loadLinkKey(file, { create: true });
    const b = loadLinkKey(file, { create: true });
    assert.deepEqual(a, b);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(readFileSync(file, 'utf8'), /^[0-9a-f]{64}\n$/);
    assert.equal(loadConfig({ env: {}, cwd: dir }).linkKeyFile, join(dir, '.coffer-data', 'link.key'));
    assert.equal(loadConfig({ env: { COFFER_VAULT_DATA_DIR: dir }, cwd: dir }).linkKeyFile, undefined);
    assert.equal(loadConfig({ env: { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_LINK_KEY_FILE: file }, cwd: dir }).linkKeyFile, file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with a link key, /v1/request needs a valid coffer-relay-auth', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-link-'));
  const linkKeyFile = join(dir, 'link.key');
  const vault = await assembleVault({ ...testConfig(dir), linkKeyFile }, { createIfMissing: true, warn: () => {} });
  const key = loadLinkKey(linkKeyFile);
  try {
    const post = async (account: string, body: Uint8Array, auth: string | null) => {
      const res = await vault.app.inject({ method: 'POST', url: '/v1/request', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account, ...(auth !== null ? { [RELAY_AUTH_HEADER]: auth } : {}) }, payload: Buffer.from(body) });
      return res;
    };
    let last: Uint8Array = new Uint8Array(0);
    const client = new VaultClient({
      fleetKey: vault.fleet.fleetKey,
      account: 'local:alice',
      ksf: INSECURE_FAST_KSF_FOR_TESTING,
      transport: async (bytes) => {
        last = bytes;
        const res = await post('local:alice', bytes, await relayAuthHeader(key, { method: 'POST', path: '/v1/request', account: 'local:alice', body: bytes }, Date.now()));
        assert.equal(res.statusCode, 200, res.body);
        return new Uint8Array(res.rawPayload);
      },
    });
    assert.equal((await client.register('correct horse battery', KEY_K)).outcome, 'ok');
    const body = last;
    const sign = (account: string, now = Date.now(), k = key) => relayAuthHeader(k, { method: 'POST', path: '/v1/request', account, body }, now);
    for (const [what, account, auth] of [
      ['missing', 'local:alice', null],
      ['garbage', 'local:alice', 'v1,t=1,mac=zz'],
      ['other account', 'local:mallory', await sign('local:alice')],
      ['stale', 'local:alice', await sign('local:alice', Date.now() - 120_000)],
      ['future', 'local:alice', await sign('local:alice', Date.now() + 120_000)],
      ['wrong key', 'local:alice', await sign('local:alice', Date.now(), new Uint8Array(32))],
    ] as const) {
      const res = await post(account, body, auth);
      assert.equal(res.statusCode, 401, what);
      assert.equal(res.json().error.code, 'relay-auth', what);
    }
    // A request captured on the link (headers and body), sent again: refused, whatever
    // it carries (here a register-start whose replay would make the user's finish stale).
    const captured = await sign('local:alice');
    const first = await post('local:alice', body, captured);
    assert.equal(first.statusCode, 200);
    const again = await post('local:alice', body, captured);
    assert.equal(again.statusCode, 401, 'replayed link request');
    assert.equal(again.json().error.code, 'relay-auth');
  } finally {
    await vault.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with a data directory and no link key the vault refuses to serve (fails closed)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-link-'));
  try {
    const config = loadConfig({ env: { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1' }, cwd: dir });
    assert.equal(config.linkKeyFile, undefined);
    assert.equal(config.insecureNoLinkAuthForTesting, undefined);
    await assert.rejects(assembleVault(config, { createIfMissing: true, warn: () => {} }), (e: unknown) => e instanceof ConfigError && /COFFER_VAULT_LINK_KEY_FILE/.test(e.message));
    // The real binary: exit 2 with the diagnostic, never a listening port.
    const r = runVaultCli(['serve'], { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_PORT: '0' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /linkKeyFile/);
    assert.doesNotMatch(r.stderr, /listening on/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING=1 serves without link authentication, with a loud warning', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-link-'));
  const warnings: string[] = [];
  const config = loadConfig({ env: { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1', COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1' }, cwd: dir });
  assert.equal(config.insecureNoLinkAuthForTesting, true);
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: 'yes' }, cwd: dir }), /expected 1 or 0/);
  const vault = await assembleVault(config, { createIfMissing: true, warn: (m) => warnings.push(m) });
  try {
    assert.ok(warnings.some((w) => /INSECURE_NO_LINK_AUTH_FOR_TESTING.*link authentication is OFF/.test(w)), warnings.join('\n'));
    const client = new VaultClient({
      fleetKey: vault.fleet.fleetKey,
      account: 'local:alice',
      ksf: INSECURE_FAST_KSF_FOR_TESTING,
      transport: async (bytes) => {
        const res = await vault.app.inject({ method: 'POST', url: '/v1/request', headers: { 'content-type': 'application/octet-stream', 'coffer-account': 'local:alice' }, payload: Buffer.from(bytes) });
        assert.equal(res.statusCode, 200, res.body);
        return new Uint8Array(res.rawPayload);
      },
    });
    assert.equal((await client.register('correct horse battery', KEY_K)).outcome, 'ok');
  } finally {
    await vault.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
