/**
 * TESTING.md: "files over 4 GiB". A sparse file of 4 GiB + 3 MiB with distinct data
 * around the 4 GiB mark and at its end: offsets past 2^32 must survive backup (chunk
 * regions, worker reads) and restore (positional writes). It reads and writes 4 GiB
 * (about 75 s on a 2-core machine), so it runs only when asked:
 * COFFER_LARGE_TESTS=1 npm test -- large-file. Every run (CI included) has
 * large-offsets.test.ts, which reads regions of such a sparse file past 2^32 in seconds.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BackupKey, LocalBackend, Repository, backup, restore } from '../src/index.js';
import { prng, tempDir } from './fixtures/trees.js';

const FOUR_GIB = 4 * 1024 * 1024 * 1024;

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

test(
  'a file over 4 GiB restores byte-identical',
  { skip: process.env.COFFER_LARGE_TESTS ? false : 'set COFFER_LARGE_TESTS=1 to run (reads and writes 4 GiB)', timeout: 15 * 60_000 },
  async (t) => {
    const src = join(await tempDir(t, 'src'), 'big');
    await fs.mkdir(src);
    const file = join(src, 'huge.bin');
    const fh = await fs.open(file, 'w');
    await fh.write(prng(1, 1 << 20), 0, 1 << 20, FOUR_GIB - (1 << 20)); // just below 2^32
    await fh.write(prng(2, 2 << 20), 0, 2 << 20, FOUR_GIB + (1 << 20)); // well past it
    await fh.close();
    const repoDir = await tempDir(t, 'repo');
    const repo = await Repository.init(new LocalBackend(repoDir), BackupKey.generate());
    const r = await backup(repo, { paths: [src] });
    assert.equal(r.snapshot.stats.bytes, FOUR_GIB + (3 << 20));
    const target = await tempDir(t, 'dst');
    await restore(repo, r, { target });
    assert.equal(await sha256(join(target, 'big', 'huge.bin')), await sha256(file));
  },
);
