/**
 * TESTING.md: "files over 4 GiB", cheaply, in every run (CI included). A sparse file of
 * 4 GiB + 3 MiB, with distinct data just below the 4 GiB mark and past it, costs a few
 * MiB of disk. The chunk workers read a file in independent regions (CHUNK_REGION_BYTES
 * in backup.ts) at positions the main thread gives them: here they read regions that
 * start below 2^32 and end past it, and one that starts past it and runs to the end,
 * and every byte must come back in order, the sizes adding up past 2^32.
 *
 * What this does not reach: a whole backup and restore of such a file, which reads and
 * writes 4 GiB (about 75 s here): large-file.test.ts does that when asked
 * (COFFER_LARGE_TESTS=1 npm test -- large-file).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BackupKey, DEFAULT_CHUNKER, RepositoryKeys } from '../src/index.js';
import { ChunkPool } from '../src/chunker/chunk-pool.js';
import { CHUNK_REGION_BYTES } from '../src/repository/backup.js';
import { prng, tempDir } from './fixtures/trees.js';

const FOUR_GIB = 2 ** 32;
const MiB = 1 << 20;

test('chunk workers read regions of a sparse file across and past the 4 GiB mark byte-exactly', async (t) => {
  const file = join(await tempDir(t, 'sparse'), 'huge.bin');
  const below = prng(1, MiB); // [4 GiB - 1 MiB, 4 GiB)
  const past = prng(2, 2 * MiB); // [4 GiB + 1 MiB, 4 GiB + 3 MiB): the end of the file
  const fh = await fs.open(file, 'w');
  await fh.write(below, 0, below.length, FOUR_GIB - MiB);
  await fh.write(past, 0, past.length, FOUR_GIB + MiB);
  await fh.close();
  const st = await fs.stat(file);
  assert.equal(st.size, FOUR_GIB + 3 * MiB);
  assert.ok(st.blocks * 512 < 64 * MiB, `the file is sparse (${st.blocks * 512} bytes allocated)`);
  // What the file holds from 4 GiB - 2 MiB to its end.
  const expectedTail = Buffer.concat([Buffer.alloc(MiB), below, Buffer.alloc(MiB), past]);

  const keys = new RepositoryKeys(BackupKey.generate(), randomBytes(16));
  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER));
  t.after(() => pool.close());
  const read = async (start: number, end: number) => {
    const parts: Buffer[] = [];
    const r = await pool.chunkFile(
      file,
      async (id, data) => {
        assert.ok(id.equals(keys.chunkId(data)), 'each chunk ID is the keyed hash of its bytes');
        parts.push(Buffer.from(data));
      },
      { start, end },
    );
    const bytes = Buffer.concat(parts);
    assert.equal(r.size, bytes.length, 'the size the worker reports is what it delivered');
    assert.equal(r.ids.length, parts.length);
    return bytes;
  };

  // A region that starts below 2^32 and ends past it, as backup.ts cuts them.
  const from = FOUR_GIB - 2 * MiB;
  const across = await read(from, FOUR_GIB + 2 * MiB);
  assert.equal(across.length, 4 * MiB);
  assert.ok(across.equals(expectedTail.subarray(0, 4 * MiB)), 'bytes across 2^32 in order');
  // The last region runs to the end of the file (end = MAX_SAFE_INTEGER, as backup.ts does).
  const tail = await read(FOUR_GIB + MiB, Number.MAX_SAFE_INTEGER);
  assert.ok(tail.equals(past), 'bytes past 2^32 to the end of the file');
  // The region boundaries backup.ts computes for this size: the last starts past 2^32.
  const starts: number[] = [];
  for (let s = 0; s === 0 || s < st.size; s += CHUNK_REGION_BYTES) starts.push(s);
  assert.ok(starts.at(-1)! >= FOUR_GIB, 'the last region starts past 2^32');
  const last = await read(starts.at(-1)!, Number.MAX_SAFE_INTEGER);
  assert.equal(starts.at(-1)! + last.length, st.size, 'regions add up to the size past 2^32');
  assert.ok(last.subarray(last.length - past.length).equals(past));
});
