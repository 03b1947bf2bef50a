/**
 * A large file's regions (CHUNK_REGION_BYTES) go to the chunk workers in regionOrder: the
 * regions holding the most bytes past the end of the file's parent version first (new
 * data, which the workers compress), so the longest job does not start last. The file's
 * chunk list stays in file order whatever order the regions were cut in.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_CHUNKER, backup, restore } from '../src/index.js';
import { CHUNK_REGION_BYTES, regionOrder } from '../src/repository/backup.js';
import { newRepo, prng, tempDir } from './fixtures/trees.js';

const MiB = 1 << 20;

test('regionOrder: the regions with the most bytes past the parent version\'s end first, the rest in file order', () => {
  assert.equal(CHUNK_REGION_BYTES, 64 * MiB);
  const id = (i: number) => Buffer.alloc(32, i).toString('hex');
  // A parent of 200 MiB in four chunks.
  const lengths = new Map([id(1), id(2), id(3), id(4)].map((h, k) => [h, [60, 70, 40, 30][k]! * MiB]));
  const known = [...lengths.keys()];
  const lengthOf = (b: Buffer) => lengths.get(b.toString('hex'));
  // Grown to 262 MiB: region 3 [192, 256) has 56 MiB past 200, region 4 [256, 262) 6 MiB.
  assert.deepEqual(regionOrder(262 * MiB, 5, known, lengthOf), [3, 4, 0, 1, 2]);
  // Grown within its last region: that region first.
  assert.deepEqual(regionOrder(210 * MiB, 4, known, lengthOf), [3, 0, 1, 2]);
  // Same size or shrunk: nothing past the end, file order.
  assert.deepEqual(regionOrder(200 * MiB, 4, known, lengthOf), [0, 1, 2, 3]);
  assert.deepEqual(regionOrder(150 * MiB, 3, known, lengthOf), [0, 1, 2]);
  // A new file, one region, or a parent chunk of unknown length: file order.
  assert.deepEqual(regionOrder(262 * MiB, 5, undefined, lengthOf), [0, 1, 2, 3, 4]);
  assert.deepEqual(regionOrder(10 * MiB, 1, known, () => assert.fail('no lookup for one region')), [0]);
  assert.deepEqual(regionOrder(262 * MiB, 5, [...known, id(9)], lengthOf), [0, 1, 2, 3, 4]);
});

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path)) h.update(b as Buffer);
  return h.digest('hex');
}

test('a grown multi-region file, its last region cut first, is listed in file order and restores byte-exact', async (t) => {
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'big');
  await fs.mkdir(src);
  const file = join(src, 'db');
  // Sparse, 130 MiB (regions [0, 64), [64, 128), [128, 130)), distinct data in each region.
  const fh = await fs.open(file, 'w');
  await fh.write(prng(1, MiB), 0, MiB, 10 * MiB);
  await fh.write(prng(2, MiB), 0, MiB, 70 * MiB);
  await fh.write(prng(3, MiB), 0, MiB, 129 * MiB);
  await fh.close();
  const first = await backup(tr.repo, { paths: [src] });
  assert.equal(first.read.files, 1);
  // 2 MiB appended: the last region, with everything past the parent's end, goes first.
  await fs.appendFile(file, prng(4, 2 * MiB));
  const second = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(second.warnings, []);
  assert.equal(second.read.files, 1);
  assert.equal(second.snapshot.stats.bytes, 132 * MiB);
  const target = await tempDir(t, 'restore');
  await restore(tr.repo, { id: second.id, snapshot: second.snapshot }, { target });
  assert.equal(await sha256(join(target, 'big', 'db')), await sha256(file), 'the restored file is the file');
});
