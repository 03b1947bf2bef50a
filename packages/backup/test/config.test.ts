/** The repository config (spec §4): errors in the order that helps the user most. */
import assert from 'node:assert/strict';
import type { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { BackupKey } from '../src/crypto/backup-key.js';
import { DEFAULT_CHUNKER } from '../src/chunker/fastcdc.js';
import { CONFIG_BYTES, Compression, decodeConfig, encodeConfig, newConfig } from '../src/repository/config.js';
import { CofferError, type CofferErrorCode } from '../src/errors.js';
import { bytes } from './helpers.js';

const key = BackupKey.fromBytes(bytes(32, 1));
const other = BackupKey.fromBytes(bytes(32, 2));
const config = newConfig(key, { minSize: 4096, avgSize: 16384, maxSize: 65536 }, Compression.Zstd, (() => bytes(16, 3)) as unknown as typeof randomBytes);
const good = Buffer.from(encodeConfig(key, config));

const code = (k: BackupKey, b: Uint8Array): CofferErrorCode | 'ok' => {
  try {
    decodeConfig(k, b, '/repo');
    return 'ok';
  } catch (e) {
    assert.ok(e instanceof CofferError, String(e));
    assert.ok(e.message.includes('/repo'), `names where: ${e.message}`);
    return e.code;
  }
};

test('round trip: 88 bytes that decode to what was encoded', () => {
  assert.equal(good.length, CONFIG_BYTES);
  const d = decodeConfig(key, good, '/repo');
  assert.deepEqual(d, { ...config, repositoryId: Uint8Array.from(config.repositoryId), keyId: Uint8Array.from(config.keyId) });
  assert.equal(decodeConfig(key, encodeConfig(key, { ...config, compression: Compression.None }), 'x').compression, Compression.None);
});

test('newConfig uses the injected rng and the default chunker is valid', () => {
  assert.deepEqual(config.repositoryId, bytes(16, 3));
  assert.doesNotThrow(() => encodeConfig(key, newConfig(key, DEFAULT_CHUNKER, Compression.Zstd)));
});

test('wrong key → wrong-key, before anything else is looked at', () => {
  assert.equal(code(other, good), 'wrong-key');
  // Even when the rest is damaged: the key is checked before the MAC and the fields.
  for (const i of [8, 40, 44, 52, 56, 87]) {
    const c = Buffer.from(good);
    c[i]! ^= 0xff;
    assert.equal(code(other, c), 'wrong-key', `byte ${i}`);
  }
});

test('right key, any one byte damaged → the one right diagnosis', () => {
  for (let i = 0; i < good.length; i++) {
    for (const x of [0x01, 0x80]) {
      const c = Buffer.from(good);
      c[i]! ^= x;
      const want = i < 4 ? 'not-a-repository' : i === 4 ? 'unsupported-version' : 'corrupt';
      assert.equal(code(key, c), want, `byte ${i} ^ ${x}`);
    }
  }
});

test('a damaged key ID with the right key is corrupt, not "wrong key"', () => {
  const c = Buffer.from(good);
  c[30]! ^= 0x04;
  assert.equal(code(key, c), 'corrupt');
  assert.equal(code(other, c), 'wrong-key');
});

test('version 3 (of any size) → unsupported-version; wrong size → corrupt', () => {
  const v3 = Buffer.from(good);
  v3[4] = 3;
  assert.equal(code(key, v3), 'unsupported-version');
  assert.equal(code(key, Buffer.concat([v3, Buffer.alloc(40)])), 'unsupported-version');
  assert.equal(code(key, good.subarray(0, 87)), 'corrupt');
  assert.equal(code(key, Buffer.concat([good, Buffer.of(0)])), 'corrupt');
});

test('garbage → not-a-repository', () => {
  for (const b of [Buffer.alloc(0), Buffer.from('CFR'), Buffer.from('{"version":1}'), bytes(88, 9), Buffer.from('CFOB\x01\x01\x10\x00')]) {
    assert.equal(code(key, b), 'not-a-repository', b.toString('hex').slice(0, 20));
  }
});
