// sealRecord writes the format byte into headroom the platform leaves before the nonce
// (Platform.seal's `headroom`) instead of copying the sealed record behind it. The stored
// bytes keep the §7 layout, formatVersion ‖ nonce ‖ ciphertext ‖ tag, whether or not the
// platform honours headroom.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_KSF } from '@coffer/protocol';
import { KEY_LABELS } from '../src/core/key-labels.js';
import type { Platform } from '../src/core/platform.js';
import { encodePaddedRecord, RECORD_FORMAT_VERSION, RECORD_PADDED_SIZE, recordAad, sealRecord, unsealRecord, type AccountRecord } from '../src/core/record.js';
import { VAULT_KEYS } from '../src/platform/index.js';
import { openSoftwarePlatform, provisionSoftwareKeys, type SoftwarePlatform } from '../src/platform/software.js';

const RECORD: AccountRecord = {
  state: 'active', guessLimit: 10, guessesUsed: 2, ksf: DEFAULT_KSF, registrationRecord: new Uint8Array(192).fill(1), registrationId: new Uint8Array(32).fill(8), ownerTokenHash: new Uint8Array(32).fill(9), registeredAt: 13, registerStarts: [11, 12], wrappedKey: new Uint8Array(60).fill(2),
  pendingLogin: { nonce: new Uint8Array(16), expiresAt: 5, serverLoginState: new Uint8Array(128).fill(3) }, pendingRegistration: null,
  changeGrant: { nonce: new Uint8Array(16).fill(4), expiresAt: 6 }, seenLogins: [{ digest: new Uint8Array(16).fill(5), expiresAt: 7 }],
};

describe('sealRecord and Platform.seal headroom', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-headroom-'));
  let platform: SoftwarePlatform;
  before(() => {
    provisionSoftwareKeys(join(dir, 'k.json'), VAULT_KEYS);
    platform = openSoftwarePlatform(join(dir, 'k.json'));
  });
  after(async () => {
    await platform.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The platform with its seal calls recorded, honouring headroom or (`ignore`) dropping it. */
  function recorded(ignore: boolean): { p: Platform; calls: (number | undefined)[] } {
    const calls: (number | undefined)[] = [];
    const p = Object.create(platform) as Platform;
    p.seal = (label, aad, plaintext, headroom) => {
      calls.push(headroom);
      return ignore ? platform.seal(label, aad, plaintext) : platform.seal(label, aad, plaintext, headroom);
    };
    return { p, calls };
  }

  /** §7 by hand: the format byte, then what the platform's seal gives, which opens with the record's AAD. */
  async function checkLayout(stored: Uint8Array, account: string): Promise<void> {
    assert.equal(stored.length, 1 + 12 + RECORD_PADDED_SIZE + 16);
    assert.equal(stored[0], RECORD_FORMAT_VERSION);
    const plain = await platform.unseal(KEY_LABELS.recordSeal, recordAad(account, RECORD_FORMAT_VERSION), stored.subarray(1));
    assert.deepEqual(plain && Uint8Array.from(plain), encodePaddedRecord(RECORD));
    assert.deepEqual(await unsealRecord(platform, account, stored), RECORD);
  }

  it('asks the platform for one byte of headroom and writes the format byte there (the sealed array itself is stored)', async () => {
    const { p, calls } = recorded(false);
    const stored = await sealRecord(p, 'alice', RECORD);
    assert.deepEqual(calls, [1]);
    assert.equal(stored.byteOffset, 0);
    assert.equal(stored.buffer.byteLength, stored.length, 'no copy into a larger or shared buffer');
    await checkLayout(stored, 'alice');
  });

  it('a platform that ignores headroom still gives the same layout (copied behind the byte)', async () => {
    const { p, calls } = recorded(true);
    const stored = await sealRecord(p, 'bob', RECORD);
    assert.deepEqual(calls, [1]);
    await checkLayout(stored, 'bob');
  });

  it('software seal: headroom zeros first, then nonce ‖ ciphertext ‖ tag that unseal opens; 0 is the default', async () => {
    const aad = Uint8Array.of(1, 2, 3);
    const pt = new Uint8Array(100).fill(7);
    for (const h of [0, 1, 5, 64]) {
      const sealed = await platform.seal(KEY_LABELS.recordSeal, aad, pt, h);
      assert.equal(sealed.length, h + 12 + pt.length + 16);
      assert.deepEqual(sealed.subarray(0, h), new Uint8Array(h));
      assert.deepEqual(Uint8Array.from((await platform.unseal(KEY_LABELS.recordSeal, aad, sealed.subarray(h)))!), pt);
    }
    assert.equal((await platform.seal(KEY_LABELS.recordSeal, aad, pt)).length, 12 + pt.length + 16);
  });
});
