// The whole vault on a PKCS#11 token (SoftHSM2): keys created by the admin command,
// register / recover / count down to erasure, and clear errors for a wrong PIN or a
// missing token.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { parseFleetKeyBundle, toHex } from '@coffer/protocol';
import { openPlatform, provisionVaultKeys, type PlatformConfig } from '../src/platform/index.js';
import { PlatformError } from '../src/core/platform.js';
import { createSoftHsmToken, type SoftHsmToken } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { runVaultCli } from './helpers/child-vault.js';

const skip = softHsmSkip();
// Tokens must exist before this process first initializes the module.
let token: SoftHsmToken;
let cliToken: SoftHsmToken;
if (!skip) {
  token = createSoftHsmToken();
  cliToken = createSoftHsmToken();
}

describeIf('vault on PKCS#11 (SoftHSM2)', skip, () => {
  let h: Harness;
  let cfg: PlatformConfig;
  before(async () => {
    cfg = { kind: 'pkcs11', module: token.module, tokenLabel: token.tokenLabel, pin: token.pin };
    assert.deepEqual([...(await provisionVaultKeys(cfg))].sort(), ['coffer-fleet-hpke-v1', 'coffer-log-mac-v1', 'coffer-record-seal-v1']);
    assert.deepEqual(await provisionVaultKeys(cfg), [], 'creating keys twice is harmless');
    h = await startHarness({ platform: cfg, policy: { guessLimit: 3 } });
  });
  after(async () => {
    await h?.close();
    token?.cleanup();
  });

  it('registers, recovers, and counts wrong passwords down to erasure', async () => {
    const c = h.client('hsm-user');
    assert.match(h.vault.platform.platform.name, /pkcs11/i);
    assert.equal((await c.register('pw', KEY_K)).outcome, 'ok');
    const r = await c.recover('pw');
    assert.ok(r.outcome === 'ok');
    assert.equal(toHex(r.backupKey.expose()), toHex(KEY_K));
    assert.deepEqual(await c.recover('x'), { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 2 });
    assert.deepEqual(await c.recover('y'), { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 1 });
    assert.deepEqual(await c.recover('z'), { outcome: 'locked', op: 'login-finish' });
    assert.equal((await c.recover('pw')).outcome, 'locked');
  });

  it('a wrong PIN is a login-failed PlatformError, a missing token token-missing', async () => {
    await assert.rejects(openPlatform({ ...cfg, pin: '9999' } as PlatformConfig), (e: unknown) => e instanceof PlatformError && e.code === 'login-failed');
    await assert.rejects(openPlatform({ ...cfg, tokenLabel: 'no-such-token' } as PlatformConfig), (e: unknown) => e instanceof PlatformError && e.code === 'token-missing');
  });
});

describeIf('coffer-vault admin command on PKCS#11', skip, () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-vault-cli-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const env = () => ({ ...cliToken.env, COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_PLATFORM: 'pkcs11', COFFER_VAULT_PKCS11_MODULE: cliToken.module, COFFER_VAULT_PKCS11_TOKEN_LABEL: cliToken.tokenLabel, COFFER_VAULT_PKCS11_PIN: cliToken.pin });

  it('keys create makes the keys and prints the bundle that bundle prints again', async () => {
    const created = runVaultCli(['keys', 'create'], env());
    assert.equal(created.status, 0, created.stderr);
    assert.match(created.stderr, /created coffer-record-seal-v1, coffer-log-mac-v1, coffer-fleet-hpke-v1/);
    const bundle = await parseFleetKeyBundle(created.stdout);
    const printed = runVaultCli(['bundle'], env());
    assert.equal(printed.status, 0, printed.stderr);
    assert.equal(toHex((await parseFleetKeyBundle(printed.stdout)).keys[0]!.publicKey), toHex(bundle.keys[0]!.publicKey));
    const again = runVaultCli(['keys', 'create'], env());
    assert.match(again.stderr, /already present/);
  });

  it('a wrong PIN fails with a clear error and exit 1', () => {
    const r = runVaultCli(['bundle'], { ...env(), COFFER_VAULT_PKCS11_PIN: '0000' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^coffer-vault: error: platform \(login-failed\)/);
    assert.equal(r.stdout, '');
  });

  it('a missing PIN is a configuration error, exit 2', () => {
    const r = runVaultCli(['bundle'], { ...env(), COFFER_VAULT_PKCS11_PIN: '' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /COFFER_VAULT_PKCS11_PIN/);
  });
});
