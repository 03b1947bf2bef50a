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

test('a config file cannot lower the KSF floor or switch on test-only policy: unknown keys are refused, the floor only rises', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-config-'));
  try {
    const file = join(dir, 'vault.json');
    const load = (policy: unknown) => {
      writeFileSync(file, JSON.stringify({ policy }));
      return loadConfig({ file, env: {} });
    };
    assert.throws(() => load({ minimumKsf: { memoryKiB: 8, iterations: 1 } }), (e: unknown) => e instanceof ConfigError && /below the default floor/.test(e.message));
    assert.throws(() => load({ minimumKsf: { memoryKiB: 65536, iterations: 3, parallelism: 1 } }), /minimumKsf.parallelism: not settable/);
    assert.throws(() => load({ insecureAllowWeakKsfForTesting: true }), /insecureAllowWeakKsfForTesting: not a policy setting/);
    assert.throws(() => load({ guessLimt: 3 }), /guessLimt: not a policy setting/);
    const raised = load({ minimumKsf: { memoryKiB: 131072, iterations: 4 }, guessLimit: 5 });
    assert.deepEqual(raised.policy.minimumKsf, { algorithm: 'argon2id', memoryKiB: 131072, iterations: 4, parallelism: 4 });
    assert.equal(raised.policy.guessLimit, 5);
    assert.equal(raised.policy.insecureAllowWeakKsfForTesting, false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the rollback-protection group: size from the file or COFFER_VAULT_GROUP_SIZE (env wins), bad sizes refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-vault-config-group-'));
  try {
    const file = join(dir, 'vault.json');
    writeFileSync(file, JSON.stringify({ store: 'etcd', etcd: { endpoints: ['http://127.0.0.1:2379'] }, group: { size: 5 } }));
    assert.equal(loadConfig({ file, env: {} }).groupSize, 5);
    assert.equal(loadConfig({ file, env: { COFFER_VAULT_GROUP_SIZE: '3' } }).groupSize, 3);
    assert.equal(loadConfig({ env: {} }).groupSize, undefined, 'unset: 3 on etcd, decided at start');
    assert.equal(loadConfig({ env: { COFFER_VAULT_LOG_BATCH_MAX: '1' } }).logBatchMax, 1);
    for (const bad of ['0', '16', 'three']) assert.throws(() => loadConfig({ env: { COFFER_VAULT_GROUP_SIZE: bad } }), (e: Error) => e instanceof ConfigError && /GROUP_SIZE|group\.size/.test(e.message), bad);
    writeFileSync(file, JSON.stringify({ group: { size: '3' } }));
    assert.throws(() => loadConfig({ file, env: {} }), /group\.size/);
    // The peer URL followers send acks to (spec §13.7): an http(s) origin, nothing else.
    writeFileSync(file, JSON.stringify({ group: { peerUrl: 'https://10.0.0.2:7441' } }));
    assert.equal(loadConfig({ file, env: {} }).peerUrl, 'https://10.0.0.2:7441');
    assert.equal(loadConfig({ file, env: { COFFER_VAULT_GROUP_PEER_URL: 'http://127.0.0.2:7441' } }).peerUrl, 'http://127.0.0.2:7441');
    assert.equal(loadConfig({ env: {} }).peerUrl, undefined);
    for (const bad of ['127.0.0.2:7441', 'ftp://h:1', 'http://h:1/v1', 'http://h:1/?x=1', 'http://u:p@h:1', 'not a url']) {
      assert.throws(() => loadConfig({ env: { COFFER_VAULT_GROUP_PEER_URL: bad } }), (e: Error) => e instanceof ConfigError && /group\.peerUrl/.test(e.message), bad);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
