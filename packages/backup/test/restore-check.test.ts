/**
 * Restore's blob-check thread (restore-check.ts, issue 13): large blobs are unpadded,
 * decompressed and checked against their IDs there, and written into the file there when
 * used once. It must refuse what the main thread's own checks refused, write nothing of
 * a refused blob, say a failed write as the system call made it, and hand the stored
 * bytes' buffers back for the next blobs.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { closeSync, openSync, promises as fs, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { backup, restore } from '../src/index.js';
import { restoreCheckForTesting } from '../src/repository/restore.js';
import { BlobCheckThread, dataRuns } from '../src/repository/restore-check.js';
import { BLOB_NOT_ITS_ID, CORRUPT_BLOB } from '../src/repository/restore-writer.js';
import { maybeCompressInto, zstdBound } from '../src/repository/compress.js';
import { BLOB_COMPRESSED } from '../src/repository/blob.js';
import { allPaths, assertSameTree, dir, file, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';

const key = Buffer.alloc(32, 3);
const idOf = (raw: Buffer) => createHmac('sha256', key).update(raw).digest();
/** `n` bytes that compress: text with a counter. */
const text = (n: number, seed: number) => Buffer.from(Array.from({ length: Math.ceil(n / 24) }, (_, i) => `line ${seed} ${i} of text\n`).join('')).subarray(0, n);
const compressed = (raw: Buffer) => {
  const c = maybeCompressInto(raw, 'max', Buffer.alloc(zstdBound(raw.length)));
  assert.equal(c.flags, BLOB_COMPRESSED);
  return Buffer.from(c.stored);
};
/** hold() then writeHeld(), as restore does for a blob used once. */
const checkAndWrite = async (th: BlobCheckThread, stored: Buffer, flags: number, rawLength: number, id: Uint8Array, fd: number, pos: number, sparse: boolean) =>
  th.writeHeld(await th.hold(stored, flags, rawLength, id), fd, pos, sparse);
const corrupt = (e: unknown, message: RegExp) => (e as NodeJS.ErrnoException).code === CORRUPT_BLOB && message.test((e as Error).message);

/** A blob-check thread and a file open with `flags` (an empty one made first), both closed after the test. */
async function threadAndFile(t: TestContext, prefix: string, flags: 'w+' | 'r') {
  const th = new BlobCheckThread({ fn: 'hmac-sha256', key });
  t.after(() => th.close());
  const path = join(await tempDir(t, prefix), 'f');
  await fs.writeFile(path, '');
  const fd = openSync(path, flags);
  t.after(() => closeSync(fd));
  return { th, path, fd };
}

test('check(): raw and compressed blobs come back as their raw bytes; a swapped ID, a broken frame and a wrong length are refused as CORRUPT_BLOB', async (t) => {
  const th = new BlobCheckThread({ fn: 'hmac-sha256', key });
  t.after(() => th.close());
  const big = text(700 * 1024, 1);
  const media = prng(2, 300 * 1024);
  const zb = compressed(big);
  const outcomes = await Promise.allSettled([
    th.check(th.buffer(zb.length).fill(zb), BLOB_COMPRESSED, big.length, idOf(big)),
    th.check(Buffer.from(media), 0, media.length, idOf(media)),
    th.check(Buffer.from(media), 0, media.length, idOf(big)),
    th.check(Buffer.concat([zb.subarray(0, 40), Buffer.alloc(100)]), BLOB_COMPRESSED, big.length, idOf(big)),
    th.check(Buffer.from(zb), BLOB_COMPRESSED, big.length + 1, idOf(big)),
    th.check(Buffer.from(media), 0, media.length, idOf(media)),
  ]);
  assert.deepEqual(
    outcomes.map((o) => o.status),
    ['fulfilled', 'fulfilled', 'rejected', 'rejected', 'rejected', 'fulfilled'],
  );
  assert.ok((outcomes[0] as PromiseFulfilledResult<Buffer>).value.equals(big));
  assert.ok((outcomes[1] as PromiseFulfilledResult<Buffer>).value.equals(media));
  assert.ok(corrupt((outcomes[2] as PromiseRejectedResult).reason, new RegExp(`^${BLOB_NOT_ITS_ID}$`)));
  assert.ok(corrupt((outcomes[3] as PromiseRejectedResult).reason, /zstd frame|does not decompress/));
  assert.ok(corrupt((outcomes[4] as PromiseRejectedResult).reason, /does not decompress|wrong length/));
  assert.ok((outcomes[5] as PromiseFulfilledResult<Buffer>).value.equals(media));
});

test('check(): a view of a larger buffer is copied, not taken: the caller\'s buffer stays usable', async (t) => {
  const th = new BlobCheckThread({ fn: 'hmac-sha256', key });
  t.after(() => th.close());
  const media = prng(4, 200 * 1024);
  const shared = Buffer.concat([Buffer.from('head'), media, Buffer.from('tail')]);
  const view = shared.subarray(4, 4 + media.length);
  assert.ok((await th.check(view, 0, media.length, idOf(media))).equals(media));
  assert.equal(shared.buffer.byteLength, media.length + 8, 'not detached');
  assert.equal(shared.subarray(0, 4).toString(), 'head');
});

test('hold() then writeHeld(): written at its place in the open file when it passes, nothing written when it does not; the stored bytes\' buffer comes back for the next blob', async (t) => {
  const { th, path, fd } = await threadAndFile(t, 'rc-write', 'w+');
  const a = text(600 * 1024, 5);
  const b = prng(6, 300 * 1024);
  const za = compressed(a);
  const bufA = th.buffer(za.length).fill(za);
  assert.equal(th.spares, 0);
  await checkAndWrite(th, bufA, BLOB_COMPRESSED, a.length, idOf(a), fd, 0, false);
  assert.equal(bufA.buffer.byteLength, 0, 'handed over: detached here');
  assert.equal(th.spares, 1, 'its buffer came back');
  // A smaller compressed blob next: decompressed into the thread's scratch, which is larger.
  const c = text(200 * 1024, 7);
  const zc = compressed(c);
  const bufC = th.buffer(zc.length);
  assert.equal(th.spares, 0, 'the buffer handed back is used again');
  assert.equal(bufC.length, zc.length);
  await checkAndWrite(th, bufC.fill(zc), BLOB_COMPRESSED, c.length, idOf(c), fd, a.length + b.length, false);
  await checkAndWrite(th, Buffer.from(b), 0, b.length, idOf(b), fd, a.length, false);
  // Refused: the file is not touched past what was written.
  await assert.rejects(checkAndWrite(th, Buffer.from(b), 0, b.length, idOf(a), fd, 10 << 20, false), (e: unknown) => corrupt(e, new RegExp(`^${BLOB_NOT_ITS_ID}$`)));
  assert.ok(readFileSync(path).equals(Buffer.concat([a, b, c])));
  // A buffer the caller used itself comes back with recycle(); one of its own does not, nor one handed over.
  const mine = th.buffer(300 * 1024);
  const kept = th.spares;
  th.recycle(mine);
  th.recycle(Buffer.alloc(300 * 1024));
  th.recycle(bufA);
  assert.equal(th.spares, kept + 1);
});

test('writeHeld(): a sparse file\'s zero blocks are left as holes, as restore does on the main thread', async (t) => {
  const { th, path, fd } = await threadAndFile(t, 'rc-sparse', 'w+');
  const raw = Buffer.concat([prng(8, 5000), Buffer.alloc(1 << 20), prng(9, 3000)]);
  assert.equal(dataRuns(raw, 100, true).length, 2, 'two runs of data around the zeros');
  await checkAndWrite(th, Buffer.from(raw), 0, raw.length, idOf(raw), fd, 100, true);
  const st = await fs.stat(path);
  assert.equal(st.size, 100 + raw.length);
  assert.ok(readFileSync(path).subarray(100).equals(raw));
  assert.ok(st.blocks * 512 < 512 * 1024, `the zeros are a hole (${st.blocks} blocks)`);
});

test('writeHeld(): a failed write is the system call\'s error (code, syscall), not a refused blob', async (t) => {
  const { th, fd } = await threadAndFile(t, 'rc-ro', 'r');
  const b = prng(10, 200 * 1024);
  await assert.rejects(checkAndWrite(th, Buffer.from(b), 0, b.length, idOf(b), fd, 0, false), (e: unknown) => {
    const err = e as NodeJS.ErrnoException;
    assert.equal(err.code, 'EBADF');
    assert.equal(err.syscall, 'write');
    return true;
  });
  // The thread goes on with the next.
  assert.ok((await th.check(Buffer.from(b), 0, b.length, idOf(b))).equals(b));
});

test('hold(): several blobs checked before any is written, then written in another order; a dropped one is never written', async (t) => {
  const { th, path, fd } = await threadAndFile(t, 'rc-hold', 'w+');
  const parts = [text(400 * 1024, 20), prng(21, 300 * 1024), text(250 * 1024, 22), prng(23, 200 * 1024)];
  const stored = parts.map((p, i) => (i % 2 === 0 ? { bytes: compressed(p), flags: BLOB_COMPRESSED } : { bytes: Buffer.from(p), flags: 0 }));
  const held = await Promise.all(stored.map((s, i) => th.hold(s.bytes, s.flags, parts[i]!.length, idOf(parts[i]!))));
  const extra = prng(24, 200 * 1024);
  const dropped = await th.hold(Buffer.from(extra), 0, extra.length, idOf(extra));
  th.drop(dropped);
  let pos = 0;
  const at = parts.map((p) => ((pos += p.length), pos - p.length));
  for (const i of [2, 0, 3, 1]) await th.writeHeld(held[i]!, fd, at[i]!, false);
  assert.ok(readFileSync(path).equals(Buffer.concat(parts)));
  await assert.rejects(th.writeHeld(dropped, fd, pos, false), /no blob held/);
  await assert.rejects(th.writeHeld(held[0]!, fd, pos, false), /no blob held/, 'written once, then dropped');
  assert.equal(readFileSync(path).length, pos);
});

for (const [how, queue] of [
  ['on the blob-check thread', 1e9],
  ['on the main thread (the thread busy)', 0],
] as const) {
  test(`a restore of large files, some sharing their blobs and some compressible, gives back the same tree: every large blob ${how}`, async (t) => {
    const before = restoreCheckForTesting.queue;
    restoreCheckForTesting.queue = queue;
    t.after(() => (restoreCheckForTesting.queue = before));
    const tr = await newRepo(t, { minSize: 128 * 1024, avgSize: 256 * 1024, maxSize: 1024 * 1024 });
    const src = join(await tempDir(t, 'rc-src'), 'd');
    const media = prng(11, 3 << 20);
    await writeTree(
      src,
      dir({
        'media.bin': file(media),
        // The same bytes again: each blob used twice (checked on the thread, written here).
        'copy.bin': file(media, 0o600, 1_600_000_000_000),
        'log.txt': file(text(5 << 20, 12)),
        'tail.bin': file(Buffer.concat([media.subarray(0, 1 << 20), text(700 * 1024, 13)])),
      }),
    );
    const r = await backup(tr.repo, { paths: [src] });
    const target = await tempDir(t, 'rc-dst');
    const res = await restore(await tr.reopen(), { id: r.id, snapshot: r.snapshot }, { target });
    assert.equal(res.files, 4);
    if (queue === 0) assert.equal(restoreCheckForTesting.sent, 0);
    else assert.ok(restoreCheckForTesting.sent >= 10, `${restoreCheckForTesting.sent} blobs went to the thread`);
    await assertSameTree(src, join(target, 'd'));
    assert.deepEqual((await allPaths(target)).filter((p) => p.includes('.coffer-restore-')), []);
  });
}

// restore-safety's cases (a swapped large blob among them) with every large blob checked on the main thread.
restoreCheckForTesting.queue = 0;
await import('./restore-safety.test.js');
