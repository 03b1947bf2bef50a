// coffer-vault configuration: defaults, file, environment (env wins), clear errors.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError, DEFAULT_PORT, loadConfig } from '../src/server/config.js';

test('no configuration gives the embedded default on 127.0.0.1', () => {
  const c = loadConfig({ env: {}, cwd: '/srv/x' });
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.port, DEFAULT_PORT);
  assert.equal(c.dataDir, '/srv/x/.coffer-data/vault');
  assert.deepEqual(c.platform, { kind: 'software', keyFile: '/srv/x/.coffer-data/vault/software-keys.json' });
  assert.equal(c.storePath, '/srv/x/.coffer-data/vault/records.sqlite');
  assert.equal(c.policy.guessLimit, 10);
  assert.equal(c.policy.insecureAllowWeakKsfForTesting, false);
  assert.equal(c.insecureCrashAfterCommitForTesting, false);
});

test('a JSON file configures; environment variables override it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-cfg-'));
  const file = join(dir, 'vault.json');
  writeFileSync(file, JSON.stringify({ listen: { port: 9000 }, dataDir: '/data', platform: 'pkcs11', pkcs11: { module: '/lib/x.so', tokenLabel: 'coffer' }, policy: { guessLimit: 5 } }));
  const c = loadConfig({ file, env: { COFFER_VAULT_PKCS11_PIN: '1234', COFFER_VAULT_GUESS_LIMIT: '7' } });
  assert.equal(c.port, 9000);
  assert.deepEqual(c.platform, { kind: 'pkcs11', module: '/lib/x.so', tokenLabel: 'coffer', pin: '1234' });
  assert.equal(c.policy.guessLimit, 7);
  assert.equal(c.fleetFile, '/data/fleet.json');
  rmSync(dir, { recursive: true, force: true });
});

test('bad settings are ConfigErrors that name the setting', () => {
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_GUESS_LIMIT: '0' } }), (e: unknown) => e instanceof ConfigError && /guessLimit/.test(e.message));
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_GUESS_LIMIT: '256' } }), ConfigError);
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_PORT: 'eighty' } }), /COFFER_VAULT_PORT/);
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_PLATFORM: 'tpm' } }), /platform/);
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_PLATFORM: 'pkcs11', COFFER_VAULT_PKCS11_MODULE: '/m.so', COFFER_VAULT_PKCS11_TOKEN_LABEL: 't' } }), /PIN/);
  assert.throws(() => loadConfig({ file: '/nonexistent.json', env: {} }), /nonexistent/);
  assert.throws(() => loadConfig({ env: { COFFER_VAULT_INSECURE_CRASH_AFTER_COMMIT_FOR_TESTING: 'yes' } }), /expected 1 or 0/);
});
