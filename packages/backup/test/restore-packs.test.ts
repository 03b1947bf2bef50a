/**
 * How restore reads packs (issue 13): two at a time, but a pack of large blobs (media, a
 * database's chunks) alone, so that its megabytes in flight are not doubled. Played
 * against a real LocalBackend whose reads are slowed, so that two packs read at once
 * would always be seen overlapping.
 */
import assert from 'node:assert/strict';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { DEFAULT_CHUNKER, LocalBackend, backup, restore, type ByteRange, type StorageBackend } from '../src/index.js';
import { assertSameTree, dir, file, newRepo, prng, tempDir, writeTree, type Spec } from './fixtures/trees.js';

/** A LocalBackend whose pack reads take a little while, recording the most packs read at once. */
function slowPacks(inner: LocalBackend): { backend: StorageBackend; most: () => number } {
  const reading = new Map<string, number>();
  let most = 0;
  const backend: StorageBackend = {
    get location() {
      return inner.location;
    },
    put: (name, parts) => inner.put(name, parts),
    create: (name) => inner.create(name),
    stat: (name) => inner.stat(name),
    list: (prefix) => inner.list(prefix),
    delete: (name) => inner.delete(name),
    sync: () => inner.sync(),
    get: (name, range) => get(name, range),
  };
  const get = async (name: string, range?: ByteRange): Promise<Uint8Array> => {
    if (!name.startsWith('data/')) return inner.get(name, range);
    reading.set(name, (reading.get(name) ?? 0) + 1);
    most = Math.max(most, reading.size);
    try {
      await sleep(15);
      return await inner.get(name, range);
    } finally {
      const n = reading.get(name)! - 1;
      if (n === 0) reading.delete(name);
      else reading.set(name, n);
    }
  };
  return { backend, most: () => most };
}

async function restoredWith(t: test.TestContext, spec: Spec): Promise<number> {
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = await tempDir(t, 'src');
  await writeTree(src, spec);
  await backup(tr.repo, { paths: [src] });
  const { backend, most } = slowPacks(new LocalBackend(tr.dir));
  const repo = await tr.reopen(backend);
  const [rec] = await repo.snapshots();
  const target = await tempDir(t, 'dst');
  await restore(repo, rec!, { target });
  await assertSameTree(src, join(target, basename(src)));
  return most();
}

test('restore reads a pack of large blobs alone, and packs of small files two at a time', async (t) => {
  // 14 MB of incompressible 512 KiB-2 MiB chunks: two packs.
  const large: Record<string, Spec> = {};
  for (let i = 0; i < 4; i++) large[`m${i}.bin`] = file(prng(100 + i, 3_500_000));
  assert.equal(await restoredWith(t, dir(large)), 1, 'large-blob packs: one at a time');

  // ~10 MiB of 5 KB files: packs of small blobs.
  const small: Record<string, Spec> = {};
  for (let i = 0; i < 2000; i++) small[`f${i}.txt`] = file(prng(i, 5000));
  assert.equal(await restoredWith(t, dir(small)), 2, 'small-blob packs: two at a time');
});
