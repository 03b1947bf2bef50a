/**
 * Restore's synchronous zstd (decompress.ts, zstd-napi) against what backups write with
 * @mongodb-js/zstd (compress.ts): every level compression uses comes back byte for byte,
 * and the checks of spec §7.1-§7.2 give the same `corrupt` errors as decompressBlob.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BLOB_COMPRESSED, BLOB_PADDED } from '../src/repository/blob.js';
import { decompressBlob, maybeCompress } from '../src/repository/compress.js';
import { decompressBlobSync } from '../src/repository/decompress.js';
import { PadMode, padBlob } from '../src/repository/padding.js';
import { CofferError } from '../src/errors.js';
import { prng } from './fixtures/trees.js';

const isCode = (code: string, msg?: RegExp) => (e: unknown) => e instanceof CofferError && e.code === code && (!msg || msg.test(e.message));

/** Compressible: a PRNG's bytes mapped onto a few letters, with runs. */
function text(bytes: number, seed: number): Buffer {
  const r = prng(seed, bytes);
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) out[i] = r[i]! % 7 === 0 ? 0x20 : 0x61 + (r[i]! % 6);
  return out;
}

const sizes = [64, 65, 1000, 4096, 65_536, 300_000, 1 << 20, (1 << 20) + 17];

for (const mode of ['auto', 'max'] as const) {
  test(`what @mongodb-js/zstd wrote (--compression ${mode}) decompresses here byte for byte, as decompressBlob gives it`, async () => {
    for (const [i, n] of sizes.entries()) {
      const raw = text(n, i + 1);
      const { stored, flags } = await maybeCompress(raw, mode);
      assert.equal(flags, BLOB_COMPRESSED, `${n} bytes compress`);
      const sync = decompressBlobSync(stored, flags, raw.length, 'blob');
      assert.ok(sync.equals(raw), `${n} bytes round-trip`);
      assert.ok(sync.equals(await decompressBlob(stored, flags, raw.length, 'blob')));
    }
  });
}

test('padded and raw blobs: the payload comes back, the same as decompressBlob', async () => {
  const raw = text(5000, 9);
  const { stored } = await maybeCompress(raw, 'auto');
  const padded = padBlob(stored, PadMode.Auto);
  assert.ok(decompressBlobSync(padded, BLOB_COMPRESSED | BLOB_PADDED, raw.length, 'blob').equals(raw));
  const noise = prng(4, 3000);
  assert.ok(decompressBlobSync(noise, 0, noise.length, 'blob').equals(noise));
  assert.ok(decompressBlobSync(padBlob(noise, PadMode.Auto), BLOB_PADDED, noise.length, 'blob').equals(noise));
});

test('garbage, a second frame, trailing bytes, a cut frame and a wrong raw length are corrupt, each with its own reason', async () => {
  const raw = text(20_000, 5);
  const { stored } = await maybeCompress(raw, 'auto');
  const cases: Array<[string, Buffer, number, RegExp]> = [
    ['garbage', prng(6, 500), 1000, /not exactly one zstd frame/],
    ['two frames', Buffer.concat([stored, stored]), raw.length, /not exactly one zstd frame/],
    ['a trailing byte', Buffer.concat([stored, Buffer.of(0)]), raw.length, /not exactly one zstd frame/],
    ['cut short', stored.subarray(0, stored.length - 3), raw.length, /not exactly one zstd frame/],
    ['raw length too large', stored, raw.length + 1, /wrong length after decompression/],
    ['raw length too small', stored, raw.length - 1, /does not decompress|wrong length/],
  ];
  for (const [what, bytes, len, why] of cases) {
    assert.throws(() => decompressBlobSync(bytes, BLOB_COMPRESSED, len, 'pack X (blob at 0)'), isCode('corrupt', why), what);
    // decompressBlob refuses the same input.
    await assert.rejects(decompressBlob(bytes, BLOB_COMPRESSED, len, 'pack X (blob at 0)'), isCode('corrupt'), what);
  }
  // A frame whose blocks are damaged (header and lengths intact) does not decompress,
  // and the next, good blob still does (the context is not left mid-frame).
  const bad = Buffer.from(stored);
  for (let i = 12; i < bad.length - 4; i += 3) bad[i]! ^= 0x5a;
  if (bad.length > 16 && (await decompressBlob(bad, BLOB_COMPRESSED, raw.length, 'x').then(() => false, () => true))) {
    assert.throws(() => decompressBlobSync(bad, BLOB_COMPRESSED, raw.length, 'x'), isCode('corrupt'));
  }
  assert.ok(decompressBlobSync(stored, BLOB_COMPRESSED, raw.length, 'blob').equals(raw));
  // Raw blobs: the stated length must be the stored one.
  assert.throws(() => decompressBlobSync(raw, 0, raw.length + 1, 'x'), isCode('corrupt', /wrong length/));
});
