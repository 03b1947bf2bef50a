/**
 * PackBuilder.addPadded seals a padded blob (spec §7.1: payload ‖ zeros ‖ uint32be(p))
 * from its payload and a shared zero buffer, without making the padded copy: the sealed
 * pack must be byte for byte the one made from padBlob's padded copy, for payloads of
 * every size (padding shorter and longer than the 64 KiB zero buffer, across segments).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { BlobType } from '../src/repository/blob.js';
import { PackBuilder } from '../src/repository/pack.js';
import { PadMode, padBlob, unpadBlob } from '../src/repository/padding.js';

test('addPadded gives the same sealed pack as add(padBlob(payload)), and the blobs unpad to their payloads', () => {
  const master = randomBytes(32);
  const packId = randomBytes(32);
  const sizes = [0, 1, 3, 4, 60, 4096, 65_535, 65_536, 70_000, 300_000, 1 << 20, 3 * (1 << 20) + 17];
  for (const mode of [PadMode.Auto, PadMode.Max]) {
    const a = new PackBuilder(master, packId);
    const b = new PackBuilder(master, packId);
    const blobs = sizes.map((n) => randomBytes(n));
    for (const [i, payload] of blobs.entries()) {
      const padded = padBlob(payload, mode);
      const entry = { id: randomBytes(32), type: BlobType.Data, flags: 2, storedLength: padded.length, rawLength: payload.length };
      a.add(entry, padded);
      b.addPadded(entry, payload, padded.length);
      assert.equal(unpadBlob(padded, `blob ${i}`).length, payload.length);
    }
    const pa = a.finish(PadMode.Auto);
    const pb = b.finish(PadMode.Auto);
    assert.deepEqual(Buffer.concat(pb.parts), Buffer.concat(pa.parts), `pad mode ${mode}: same sealed bytes`);
    assert.deepEqual(pb.entries, pa.entries);
  }
});

test('addPadded: padding of every length around the zero buffer\'s size (the last zeros and the trailer sealed together) gives the padded blob\'s pack', () => {
  const master = randomBytes(32);
  const packId = randomBytes(32);
  const a = new PackBuilder(master, packId);
  const b = new PackBuilder(master, packId);
  const K64 = 64 * 1024;
  const pads = [4, 5, 8, 100, K64 - 5, K64 - 4, K64 - 3, K64 - 1, K64, K64 + 1, K64 + 3, K64 + 4, K64 + 5, 2 * K64, 2 * K64 + 3, 2 * K64 + 4, 2 * K64 + 5, 3 * K64 + 77];
  for (const [i, pad] of pads.entries()) {
    const payload = randomBytes(i * 37);
    const padded = Buffer.concat([payload, Buffer.alloc(pad - 4), Buffer.alloc(4)]);
    padded.writeUInt32BE(pad, padded.length - 4);
    const entry = { id: randomBytes(32), type: BlobType.Data, flags: 2, storedLength: padded.length, rawLength: payload.length };
    a.add(entry, padded);
    b.addPadded(entry, payload, padded.length);
    assert.deepEqual(unpadBlob(padded, `pad ${pad}`), payload);
  }
  const pa = a.finish(PadMode.Auto);
  const pb = b.finish(PadMode.Auto);
  assert.deepEqual(Buffer.concat(pb.parts), Buffer.concat(pa.parts), 'same sealed bytes');
  assert.deepEqual(pb.entries, pa.entries);
});
