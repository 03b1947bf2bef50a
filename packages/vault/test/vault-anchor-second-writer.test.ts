// Attack (operator): two vault processes on ONE anchor — the same PKCS#11 token (any HSM
// lets several processes log in), or the same software key folder — each serving its own
// copy of the SQLite store, copied while both were at the same log entry. Each resumes
// fine (its copy continues the anchor). Before the fix, each then wrote the anchor
// blindly on every capture, so the second vault counted its own guesses from the copy's
// state: 10 more wrong passwords per copy, as many copies as the operator likes (and no
// restart needed: the idle vault's guard still held the old entry in memory). Now a
// platform refuses an anchor write when the stored anchor is not the one it last read or
// wrote (PlatformError `anchor-moved`), the core turns that into store-rolled-back, and
// nothing of the batch is answered.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { provisionVaultKeys, type PlatformConfig } from '../src/platform/index.js';
import { createSoftHsmToken, type SoftHsmToken } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';
import { KEY_K, startHarness } from './helpers/vault-harness.js';

const skip = softHsmSkip();
let token: SoftHsmToken;
if (!skip) token = createSoftHsmToken(); // before this process first initializes the module

const FILES = ['records.sqlite', 'records.sqlite-wal', 'records.sqlite-shm', 'fleet.json'];
function copyStore(from: string, to: string): void {
  for (const f of FILES) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
}

async function play(platform: PlatformConfig): Promise<void> {
  const a = mkdtempSync(join(tmpdir(), 'coffer-vault-2w-a-'));
  const b = mkdtempSync(join(tmpdir(), 'coffer-vault-2w-b-'));
  try {
    const h = await startHarness({ dir: a, platform });
    assert.equal((await h.client('alice').register('right', KEY_K)).outcome, 'ok');
    await h.close();
    copyStore(a, b); // the operator's copy, at the anchored entry
    const ha = await startHarness({ dir: a, platform });
    const hb = await startHarness({ dir: b, platform });
    try {
      // Both resumed from the same anchor. Vault A spends 9 of alice's 10 guesses.
      for (let i = 0; i < 9; i++) {
        const r = await ha.client('alice').recover(`wrong a${i}`);
        assert.ok(r.outcome === 'wrong-password' && r.guessesRemaining === 9 - i, JSON.stringify(r));
      }
      // Vault B, on its copy, must not count (and answer) guesses of its own.
      let extra = 0;
      for (let i = 0; i < 5; i++) {
        try {
          const r = await hb.client('alice').recover(`wrong b${i}`);
          if (r.outcome === 'wrong-password') extra++;
        } catch (err) {
          assert.match((err as Error).message, /HTTP 500.*store-rolled-back/);
        }
      }
      assert.equal(extra, 0, `the second vault answered ${extra} guesses from its copy of the store`);
      assert.ok((await hb.metric('coffer_vault_rollbacks_detected_total')) >= 1, 'the second vault raises the alarm');
      // Vault A, whose store continues the anchor, still serves with alice's count.
      const s = await ha.client('alice').status(KEY_K);
      assert.ok(s.outcome === 'ok' && s.guessesRemaining === 1, JSON.stringify(s));
      assert.equal((await ha.client('alice').recover('right')).outcome, 'ok');
    } finally {
      await hb.close();
      await ha.close();
    }
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
}

describe('two vaults on one anchor, each with its own copy of the store (software key folder)', () => {
  const keys = mkdtempSync(join(tmpdir(), 'coffer-vault-2w-keys-'));
  after(() => rmSync(keys, { recursive: true, force: true }));
  it('the second vault answers no guess from its copy: store-rolled-back', async () => {
    await play({ kind: 'software', keyFile: join(keys, 'software-keys.json') });
  });
});

describeIf('two vaults on one anchor, each with its own copy of the store (PKCS#11, SoftHSM2)', skip, () => {
  it('the second vault answers no guess from its copy: store-rolled-back', async () => {
    const platform: PlatformConfig = { kind: 'pkcs11', module: token.module, tokenLabel: token.tokenLabel, pin: token.pin };
    await provisionVaultKeys(platform);
    await play(platform);
  });
});
