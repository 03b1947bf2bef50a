// Real processes: coffer-vault and coffer-relay as children on 127.0.0.1, a device that
// creates an account, signs in, and registers and recovers its backup key with OPAQUE
// through the relay (VaultClient from @coffer/protocol). The vault refuses requests
// that bypass the relay; a vault that goes away gives a clean 503.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, VaultClient } from '@coffer/protocol';
import { newDeviceKey, RELAY_MAIN, signChallenge, startChild, startVault, tempDir, writeLinkKey } from './helpers.js';

const K = new Uint8Array(32).map((_, i) => 200 - i);

test('full OPAQUE register + recover through a real coffer-relay to a real coffer-vault', { timeout: 60_000 }, async (t) => {
  const dir = tempDir(t);
  const linkKeyFile = writeLinkKey(dir, 'cd'.repeat(32));
  const vault = await startVault(join(dir, 'vault'), linkKeyFile);
  t.after(() => vault.stop());
  const relay = await startChild(RELAY_MAIN, { COFFER_RELAY_DATA_DIR: join(dir, 'relay'), COFFER_RELAY_PORT: '0', COFFER_RELAY_LINK_KEY_FILE: linkKeyFile, COFFER_RELAY_VAULT_NODES: vault.url, COFFER_RELAY_LOG_LEVEL: 'info', COFFER_RELAY_VAULT_ATTEMPT_TIMEOUT_MS: '10000', COFFER_RELAY_VAULT_DEADLINE_MS: '30000' }, 'coffer-relay');
  t.after(() => relay.stop());

  const post = (path: string, body: unknown) => fetch(`${relay.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const device = newDeviceKey();
  const { account } = (await (await post('/v1/accounts', { publicKey: device.publicKey })).json()) as { account: string };
  const { challenge } = (await (await post('/v1/sessions/challenge', { account })).json()) as { challenge: string };
  const { token } = (await (await post('/v1/sessions', { account, challenge, signature: signChallenge(device.key, challenge) })).json()) as { token: string };

  const client = (acct: string) =>
    new VaultClient({
      fleetKey: vault.fleetKey,
      account: acct,
      ksf: INSECURE_FAST_KSF_FOR_TESTING,
      transport: async (bytes) => {
        const res = await fetch(`${relay.url}/v1/vault`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }, body: bytes });
        if (res.status !== 200) throw new Error(`relay answered ${res.status}: ${await res.text()}`);
        return new Uint8Array(await res.arrayBuffer());
      },
    });
  // The vault sees the relay's account name for this session: local:<id>.
  const c = client(`local:${account}`);
  assert.equal((await c.register('correct horse battery staple', K)).outcome, 'ok');
  const wrong = await c.recover('wrong password');
  assert.equal(wrong.outcome, 'wrong-password');
  const ok = await c.recover('correct horse battery staple');
  assert.equal(ok.outcome, 'ok');
  assert.deepEqual(ok.outcome === 'ok' ? ok.backupKey.expose() : null, K);

  // A client claiming another account in its sealed request is refused by the vault
  // (the relay names the account, the HPKE binding checks it).
  await assert.rejects(client('local:someone-else').status(), /relay answered 400/);

  // Going around the relay: no link MAC, the vault says 401 relay-auth.
  const direct = await fetch(`${vault.url}/v1/request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'coffer-account': `local:${account}` }, body: new Uint8Array(603) });
  assert.equal(direct.status, 401);
  assert.equal(((await direct.json()) as { error: { code: string } }).error.code, 'relay-auth');

  // Nothing secret in the relay's logs: no token, no password.
  for (const s of [token, 'correct horse', challenge]) assert.ok(!relay.stdout().includes(s));
  assert.match(relay.stdout(), /"bodyBytes":603/);

  // The vault goes away: a clean 503, at once (a refused connection waits for no timeout).
  await vault.stop();
  const started = Date.now();
  const res = await fetch(`${relay.url}/v1/vault`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }, body: new Uint8Array(603) });
  assert.equal(res.status, 503);
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'vault-unavailable');
  assert.ok(Date.now() - started < 8000, 'well inside one attempt timeout (10 s)');
  const health = await fetch(`${relay.url}/healthz`);
  assert.equal(health.status, 200);
});

test('failover between two real vault nodes sharing one fleet', { timeout: 60_000 }, async (t) => {
  const dir = tempDir(t);
  const linkKeyFile = writeLinkKey(dir, 'ef'.repeat(32));
  // Two vault processes on one data directory = one fleet key and one record store
  // (the fleet issue replaces this with etcd); enough to show the relay moves on.
  const a = await startVault(join(dir, 'vault'), linkKeyFile);
  t.after(() => a.stop());
  const b = await startVault(join(dir, 'vault'), linkKeyFile);
  t.after(() => b.stop());
  const relay = await startChild(RELAY_MAIN, { COFFER_RELAY_DATA_DIR: join(dir, 'relay'), COFFER_RELAY_PORT: '0', COFFER_RELAY_LINK_KEY_FILE: linkKeyFile, COFFER_RELAY_VAULT_NODES: `${a.url},${b.url}`, COFFER_RELAY_LOG_LEVEL: 'warn', COFFER_RELAY_VAULT_ATTEMPT_TIMEOUT_MS: '10000', COFFER_RELAY_VAULT_DEADLINE_MS: '30000' }, 'coffer-relay');
  t.after(() => relay.stop());
  const post = (path: string, body: unknown) => fetch(`${relay.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const device = newDeviceKey();
  const { account } = (await (await post('/v1/accounts', { publicKey: device.publicKey })).json()) as { account: string };
  const { challenge } = (await (await post('/v1/sessions/challenge', { account })).json()) as { challenge: string };
  const { token } = (await (await post('/v1/sessions', { account, challenge, signature: signChallenge(device.key, challenge) })).json()) as { token: string };
  const c = new VaultClient({
    fleetKey: a.fleetKey,
    account: `local:${account}`,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      const res = await fetch(`${relay.url}/v1/vault`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }, body: bytes });
      if (res.status !== 200) throw new Error(`relay answered ${res.status}: ${await res.text()}`);
      return new Uint8Array(await res.arrayBuffer());
    },
  });
  assert.equal((await c.register('tr0ub4dor&3 horse', K)).outcome, 'ok');
  await a.stop();
  const ok = await c.recover('tr0ub4dor&3 horse');
  assert.equal(ok.outcome, 'ok', 'recovered through the second node');
});
