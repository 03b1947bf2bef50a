// The digest a login-start is remembered by in the record's seen list (spec/vault-protocol.md
// §5.2 step 4): SHA-256("coffer/vault/v1/login-replay" ‖ 0x00 ‖ enc)[0..16], built here
// independently with node's createHash. Records in stores hold these digests: a different
// value would let a KE1 replayed across an upgrade through.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { toHex, useCryptoProvider } from '@coffer/protocol';
import { nodeCryptoProvider } from '../src/server/node-crypto.js';
import { loginReplayDigest } from '../src/core/vault-core.js';

const reference = (enc: Uint8Array): string => createHash('sha256').update('coffer/vault/v1/login-replay').update(new Uint8Array([0])).update(enc).digest('hex').slice(0, 32);

describe('loginReplayDigest', () => {
  useCryptoProvider(nodeCryptoProvider);
  it("the spec's 16 bytes, for 65-byte encs and other lengths", async () => {
    const encs = [new Uint8Array(65), new Uint8Array(65).fill(0xff), ...Array.from({ length: 8 }, () => new Uint8Array(randomBytes(65))), new Uint8Array(0), new Uint8Array(randomBytes(7))];
    for (const enc of encs) {
      const d = await loginReplayDigest(enc);
      assert.equal(d.length, 16);
      assert.equal(toHex(d), reference(enc));
    }
  });

  it('a known value (enc = 0x04 followed by 64 bytes of 0x01)', async () => {
    const enc = new Uint8Array(65).fill(1);
    enc[0] = 4;
    assert.equal(toHex(await loginReplayDigest(enc)), '91ced03541b3e8884838b5f96c27ca83'); // Python hashlib
  });

  it('the input is not kept: two encs give their own digests, and the enc is left as it was', async () => {
    const a = new Uint8Array(randomBytes(65));
    const copy = a.slice();
    const b = new Uint8Array(randomBytes(65));
    const [da, db] = await Promise.all([loginReplayDigest(a), loginReplayDigest(b)]);
    assert.equal(toHex(da), reference(a));
    assert.equal(toHex(db), reference(b));
    assert.deepEqual(a, copy);
  });
});
