// The coffer-vault command on the software platform: zero-config start, admin
// commands, exit codes and stderr conventions.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseFleetKeyBundle } from '@coffer/protocol';
import { httpClient, runVaultCli, startChildVault } from './helpers/child-vault.js';

describe('coffer-vault (software platform)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-vault-cli-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('starts with no configuration at all in the working directory, warning that it is not an HSM', async () => {
    const cwdDir = mkdtempSync(join(tmpdir(), 'coffer-vault-zero-'));
    const { spawn } = await import('node:child_process');
    const { MAIN } = await import('./helpers/child-vault.js');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COFFER_VAULT_')));
    const child = spawn(process.execPath, [MAIN], { cwd: cwdDir, env: { ...env, COFFER_VAULT_PORT: '0' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', (d) => {
        err += d;
        if (/metrics \(admin listener\) at http:\/\/127\.0\.0\.1:\d+/.test(err)) resolve();
      });
      child.once('exit', () => reject(new Error(err)));
    });
    assert.match(err, /WARNING: .*NOT an HSM/);
    const url = /listening on (\S+)/.exec(err)![1]!;
    const health = (await (await fetch(`${url}/healthz`)).json()) as { platform: string };
    assert.equal(health.platform, 'software');
    const adminUrl = /metrics \(admin listener\) at (\S+)\/metrics/.exec(err)![1]!;
    assert.notEqual(adminUrl, url);
    assert.equal((await fetch(`${url}/metrics`)).status, 404, 'the request listener serves no metrics');
    const metrics = await (await fetch(`${adminUrl}/metrics`)).text();
    assert.match(metrics, /coffer_vault_guesses_counted_total 0/);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    assert.equal(statSync(join(cwdDir, '.coffer-data', 'vault', 'software-keys.json')).mode & 0o777, 0o600);
    rmSync(cwdDir, { recursive: true, force: true });
  });

  it('keys create then bundle print the same fleet key; stdout carries only the JSON', async () => {
    const env = { COFFER_VAULT_DATA_DIR: dir };
    const created = runVaultCli(['keys', 'create'], env);
    assert.equal(created.status, 0, created.stderr);
    const a = await parseFleetKeyBundle(created.stdout);
    const b = await parseFleetKeyBundle(runVaultCli(['bundle'], env).stdout);
    assert.deepEqual(a, b);
  });

  it('the service uses the keys that keys create made', async () => {
    // The fleet key as `keys create` printed it, before the service ever ran.
    const created = await parseFleetKeyBundle(runVaultCli(['bundle'], { COFFER_VAULT_DATA_DIR: dir }).stdout);
    const keysFile = readFileSync(join(dir, 'software-keys.json'));
    const v = await startChildVault({ COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_LOG_LEVEL: 'silent', COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1' });
    try {
      // A client that pins that key registers and recovers: requests sealed to it are
      // opened by the service, so the service holds its private half.
      const key = new Uint8Array(32).fill(7);
      const client = httpClient(v.url, created.keys[0]!, 'cli-keys');
      assert.equal((await client.register('right', key)).outcome, 'ok');
      const r = await client.recover('right');
      assert.equal(r.outcome, 'ok');
      assert.deepEqual(r.outcome === 'ok' ? [...r.backupKey.expose()] : null, [...key]);
      // And it did not make keys of its own.
      assert.ok(readFileSync(join(dir, 'software-keys.json')).equals(keysFile), 'the key file is unchanged');
    } finally {
      await v.stop();
    }
  });

  it('usage errors exit 2 with a lowercase diagnostic on stderr', () => {
    const r = runVaultCli(['frobnicate'], { COFFER_VAULT_DATA_DIR: dir });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^coffer-vault: error: unknown command "frobnicate"/);
    const bad = runVaultCli(['bundle'], { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_GUESS_LIMIT: '300' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /guessLimit/);
  });

  it('bundle without a fleet file says how to make one', () => {
    const empty = mkdtempSync(join(tmpdir(), 'coffer-vault-empty-'));
    const r = runVaultCli(['bundle'], { COFFER_VAULT_DATA_DIR: empty });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /coffer-vault: error: /);
    rmSync(empty, { recursive: true, force: true });
  });
});
