/**
 * Tree blobs are compressed on the backup's own thread with its reused zstd context and
 * output buffer (BlobWriter.add's `here`), not on libuv's pool, whose four threads each
 * kept a fresh context's ~4 MB in their own malloc arenas (issue 13). What is stored
 * reads back the same, with every padding mode, also when blobs added at once share the
 * one output buffer and a full pack must be written first (padding max).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { backup, check, restore } from '../src/index.js';
import { BLOB_COMPRESSED, BlobType } from '../src/repository/blob.js';
import { BlobWriter, compressedHereForTesting } from '../src/repository/blob-writer.js';
import { parentBlobsReadHereForTesting } from '../src/repository/backup.js';
import { PadMode } from '../src/repository/padding.js';
import { treeBlobsReadHereForTesting } from '../src/repository/repository.js';
import { assertSameTree, dir, file, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';

/** Compressible to about half: text and random bytes interleaved. */
function halfText(n: number, seed: number): Buffer {
  const r = prng(seed, n);
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (i >> 6) % 2 === 0 ? r[i]! : 0x61 + ((i * 7 + seed) % 5);
  return out;
}

for (const padding of [PadMode.Off, PadMode.Auto, PadMode.Max]) {
  test(`blobs compressed here, added all at once, read back as added (padding ${PadMode[padding]}); a pack fills and is written between them`, async (t) => {
    const { repo } = await newRepo(t);
    const writer = new BlobWriter(repo, () => false, padding, 'auto');
    const before = compressedHereForTesting.count;
    // ~20 MiB raw, ~10 MiB stored: more than one pack (8 MiB), with every padding mode.
    const blobs = Array.from({ length: 40 }, (_, i) => halfText(300_000 + i * 10_000, i + 1));
    const ids = blobs.map((b) => repo.keys.chunkId(b));
    await Promise.all(blobs.map((b, i) => writer.add(BlobType.Tree, ids[i]!, b, true)));
    await writer.finish();
    assert.equal(compressedHereForTesting.count - before, blobs.length);
    const index = await repo.index();
    let compressed = 0;
    for (let i = 0; i < blobs.length; i++) {
      assert.deepEqual(await repo.readBlob(ids[i]!), blobs[i], `blob ${i}`);
      if ((index.get(ids[i]!)!.flags & BLOB_COMPRESSED) !== 0) compressed++;
    }
    assert.equal(compressed, blobs.length);
    assert.ok((await repo.backend.list('data/')).length >= 2, 'more than one pack');
  });
}

test("a backup's tree blobs are compressed on its own thread, and it restores and checks clean", async (t) => {
  const src = await tempDir(t, 'src');
  const children: Record<string, ReturnType<typeof file>> = {};
  for (let i = 0; i < 300; i++) children[`file-with-a-longish-name-${i}.txt`] = file(`content ${i}\n`);
  await writeTree(join(src, 'd'), dir({ a: dir(children), b: dir({ 'x.txt': file('x') }) }));
  const { repo } = await newRepo(t);
  const before = compressedHereForTesting.count;
  const r = await backup(repo, { paths: [join(src, 'd')] });
  assert.ok(compressedHereForTesting.count > before, 'tree blobs went through the calling thread');
  const c = await check(repo, { readData: true });
  assert.deepEqual(c.problems, []);
  const out = await tempDir(t, 'out');
  await restore(repo, { id: r.id, snapshot: r.snapshot }, { target: out });
  await assertSameTree(join(src, 'd'), join(out, 'd'));
});

test("a second backup reads its parent's tree blobs on its own thread (readBlob's `here`): the same bytes as through the pool, a wrong blob still refused", async (t) => {
  const src = await tempDir(t, 'src');
  const children: Record<string, ReturnType<typeof file>> = {};
  for (let i = 0; i < 400; i++) children[`an-unchanged-file-${i}.txt`] = file(`content ${i}\n`);
  await writeTree(join(src, 'd'), dir({ a: dir(children) }));
  const { repo } = await newRepo(t);
  const first = await backup(repo, { paths: [join(src, 'd')] });
  await writeTree(join(src, 'd', 'b'), dir({ 'new.txt': file('new') }));
  const before = parentBlobsReadHereForTesting.count;
  const second = await backup(repo, { paths: [join(src, 'd')] });
  assert.equal(parentBlobsReadHereForTesting.count - before, first.snapshot.tree.length, 'each parent tree blob read here');
  const out = await tempDir(t, 'out');
  await restore(repo, { id: second.id, snapshot: second.snapshot }, { target: out });
  await assertSameTree(join(src, 'd'), join(out, 'd'));
  const c = await check(repo, { readData: true });
  assert.deepEqual(c.problems, []);
  // Compressed and raw blobs (padded: the repository's default) read the same either way.
  const index = await repo.index();
  const kinds = new Set<number>();
  for (const [key, loc] of index.entries()) {
    const id = Buffer.from(key, 'latin1');
    assert.deepEqual(await repo.readBlob(id, undefined, true), await repo.readBlob(id));
    kinds.add(loc.flags & BLOB_COMPRESSED);
  }
  assert.deepEqual([...kinds].sort(), [0, BLOB_COMPRESSED]);
  // An index entry naming another blob's bytes: refused here as through the pool.
  const all = [...index.entries()];
  await assert.rejects(repo.readBlob(Buffer.from(all[0]![0], 'latin1'), all[1]![1], true), /does not match its ID/);
});

test("a snapshot's listing (tree(), treeEach: restore, ls, diff) decompresses its tree blobs on the calling thread, and a restore lists through it", async (t) => {
  const src = await tempDir(t, 'src');
  const children: Record<string, ReturnType<typeof file>> = {};
  for (let i = 0; i < 400; i++) children[`a-file-with-a-long-name-${i}.txt`] = file(`content ${i}\n`);
  await writeTree(join(src, 'd'), dir({ a: dir(children) }));
  const { repo } = await newRepo(t);
  const { id, snapshot } = await backup(repo, { paths: [join(src, 'd')] });
  const blobs = snapshot.tree.length;
  let before = treeBlobsReadHereForTesting.count;
  const viaTree: string[] = [];
  for await (const e of repo.tree(snapshot)) viaTree.push(e.path);
  assert.equal(treeBlobsReadHereForTesting.count - before, blobs);
  before = treeBlobsReadHereForTesting.count;
  const viaEach: string[] = [];
  await repo.treeEach(snapshot, (e) => viaEach.push(e.path));
  assert.equal(treeBlobsReadHereForTesting.count - before, blobs);
  assert.deepEqual(viaEach, viaTree);
  assert.ok(viaTree.length > 400);
  before = treeBlobsReadHereForTesting.count;
  const out = await tempDir(t, 'out');
  await restore(repo, { id, snapshot }, { target: out });
  assert.ok(treeBlobsReadHereForTesting.count - before >= blobs);
  await assertSameTree(join(src, 'd'), join(out, 'd'));
});

test('with compression max, blobs asked to be compressed here go to the pool all the same (level 19 would hold the thread), and read back', async (t) => {
  const { repo } = await newRepo(t);
  const writer = new BlobWriter(repo, () => false, PadMode.Auto, 'max');
  const before = compressedHereForTesting.count;
  const blobs = Array.from({ length: 3 }, (_, i) => halfText(100_000, 100 + i));
  const ids = blobs.map((b) => repo.keys.chunkId(b));
  await Promise.all(blobs.map((b, i) => writer.add(BlobType.Tree, ids[i]!, b, true)));
  await writer.finish();
  assert.equal(compressedHereForTesting.count, before);
  for (let i = 0; i < blobs.length; i++) assert.deepEqual(await repo.readBlob(ids[i]!), blobs[i]);
});
