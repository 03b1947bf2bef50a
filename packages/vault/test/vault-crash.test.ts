// A guess is durable before its KE2 leaves (spec §5.5): kill -9 the vault process
// right after the commit and before the answer, restart it, and the guess is counted.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { toHex } from '@coffer/protocol';
import { bundleKey, httpClient, startChildVault, type ChildVault } from './helpers/child-vault.js';

const K = new Uint8Array(32).fill(9);

describe('crash between counting a guess and answering', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-vault-crash-'));
  const env = { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_LOG_LEVEL: 'warn', COFFER_VAULT_GUESS_LIMIT: '5' };
  let vault: ChildVault | undefined;
  after(async () => {
    await vault?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the guess survives kill -9 and the client never saw KE2', async () => {
    // First start creates the keys and fleet file; register normally.
    vault = await startChildVault(env);
    const fleetKey = await bundleKey(env);
    assert.equal((await httpClient(vault.url, fleetKey, 'alice').register('right', K)).outcome, 'ok');
    await vault.stop();

    vault = await startChildVault({ ...env, COFFER_VAULT_INSECURE_CRASH_AFTER_COMMIT_FOR_TESTING: '1' });
    assert.match(vault.stderr(), /kills itself after counting a guess/);
    const exited = once(vault.child, 'exit');
    await assert.rejects(httpClient(vault.url, fleetKey, 'alice').recover('wrong'), 'the connection dies without an answer');
    const [code, signal] = await exited;
    assert.equal(signal, 'SIGKILL', `exit code ${code}`);

    vault = await startChildVault(env);
    const c = httpClient(vault.url, fleetKey, 'alice');
    const s = await c.status(K);
    assert.deepEqual(s.outcome === 'ok' && [s.guessesRemaining, s.guessLimit], [4, 5]);
    const r = await c.recover('right');
    assert.ok(r.outcome === 'ok');
    assert.equal(toHex(r.backupKey.expose()), toHex(K));
  });
});
