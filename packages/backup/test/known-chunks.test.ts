/**
 * A changed large file cut in regions (CHUNK_REGION_BYTES): the chunks of its parent
 * version found again travel as their IDs alone (knownByRegion, the workers' `known`), the
 * new ones as stored bytes; the file's chunk list is in file order and restores byte-exact.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_CHUNKER, backup, restore } from '../src/index.js';
import { knownChunksForTesting } from '../src/repository/backup.js';
import { newRepo, prng, tempDir } from './fixtures/trees.js';

const MiB = 1 << 20;

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path)) h.update(b as Buffer);
  return h.digest('hex');
}

test('a grown multi-region file, its unchanged regions\' chunks known, is listed in file order and restores byte-exact', async (t) => {
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
  // 2 MiB appended: regions 0 and 1 unchanged (their chunks known), the last one grown.
  await fs.appendFile(file, prng(4, 2 * MiB));
  const known = knownChunksForTesting.count;
  const second = await backup(tr.repo, { paths: [src] });
  assert.ok(knownChunksForTesting.count - known > 0, 'the unchanged regions\' chunks came back as IDs alone');
  assert.deepEqual(second.warnings, []);
  assert.equal(second.read.files, 1);
  assert.equal(second.snapshot.stats.bytes, 132 * MiB);
  const target = await tempDir(t, 'restore');
  await restore(tr.repo, { id: second.id, snapshot: second.snapshot }, { target });
  assert.equal(await sha256(join(target, 'big', 'db')), await sha256(file), 'the restored file is the file');
});
