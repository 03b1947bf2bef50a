// Rollback protection with the anchor in a PKCS#11 token (SoftHSM2; spec §13): the
// embedded one-node group over SQLite, its anchor the token's CKO_DATA object. A store
// restored from a copy taken before 5 wrong guesses is refused and gives no fresh
// guesses; the real store put back serves again with the count it had.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { provisionVaultKeys, type PlatformConfig } from '../src/platform/index.js';
import { createSoftHsmToken, type SoftHsmToken } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';
import { KEY_K, startHarness } from './helpers/vault-harness.js';

const skip = softHsmSkip();
let token: SoftHsmToken;
if (!skip) token = createSoftHsmToken(); // before this process first initializes the module

const FILES = ['records.sqlite', 'records.sqlite-wal', 'records.sqlite-shm'];
function copy(dir: string, from: string, to: string): void {
  for (const f of FILES) {
    rmSync(join(dir, f + to), { force: true });
    if (existsSync(join(dir, f + from))) copyFileSync(join(dir, f + from), join(dir, f + to));
  }
}

describeIf('rollback protection with a PKCS#11 anchor (SoftHSM2)', skip, () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-vault-rollback-p11-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a restored copy is refused (store-rolled-back), never 10 fresh guesses; the real store serves again', async () => {
    const platform: PlatformConfig = { kind: 'pkcs11', module: token.module, tokenLabel: token.tokenLabel, pin: token.pin };
    await provisionVaultKeys(platform);
    let h = await startHarness({ dir, platform });
    assert.ok(h.vault.committer, 'rollback protection is on');
    assert.equal((await h.client('alice').register('right', KEY_K)).outcome, 'ok');
    await h.close();
    copy(dir, '', '.before');
    h = await startHarness({ dir, platform });
    for (let i = 0; i < 5; i++) assert.equal((await h.client('alice').recover(`wrong ${i}`)).outcome, 'wrong-password');
    await h.close();
    copy(dir, '', '.after');
    copy(dir, '.before', '');
    h = await startHarness({ dir, platform });
    for (let i = 0; i < 10; i++) await assert.rejects(h.client('alice').recover(`fresh ${i}`), /HTTP 500.*store-rolled-back/);
    assert.equal(await h.metric('coffer_vault_guesses_counted_total'), 0);
    await h.close();
    copy(dir, '.after', '');
    h = await startHarness({ dir, platform });
    const s = await h.client('alice').status(KEY_K);
    assert.ok(s.outcome === 'ok' && s.guessesRemaining === 5, JSON.stringify(s));
    assert.equal((await h.client('alice').recover('right')).outcome, 'ok');
    await h.close();
  });
});
