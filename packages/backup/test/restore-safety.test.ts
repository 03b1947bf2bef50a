/**
 * Restore checks what it writes and says what it did (issue 10, "Low"): every chunk is
 * checked against its ID (the keyed hash of its plaintext) as it is written, and a
 * failed `--overwrite` restore reports the files it had already replaced.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { CofferError, ObjectKind, RestoreSelection, backup, indexName, restore } from '../src/index.js';
import { decodeIndex, encodeIndex } from '../src/repository/index-file.js';
import { allPaths, damageSmallerOfTwoPacks, dir, file, newRepo, tempDir, writeTree } from './fixtures/trees.js';
import type { ChunkerParams } from '../src/chunker/fastcdc.js';

/**
 * Backs up two one-blob files of `size` random bytes, then swaps where the index says their
 * blobs are (same length, so only the IDs can tell; padding gives both the same stored
 * length too): restore must refuse rather than write the wrong bytes.
 */
async function swappedBlobsAreRefused(t: TestContext, size: number, chunker?: ChunkerParams): Promise<void> {
  const tr = await newRepo(t, chunker);
  const src = join(await tempDir(t, 'rs-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(randomBytes(size)), 'b.bin': file(randomBytes(size)) }));
  await backup(tr.repo, { paths: [src] });
  // Unswapped, both restore (the ID check agrees).
  const ok = await tempDir(t, 'rs-ok');
  await restore(tr.repo, (await tr.repo.snapshots())[0]!, { target: ok });
  assert.ok((await fs.readFile(join(ok, 'd', 'a.bin'))).equals(await fs.readFile(join(src, 'a.bin'))));
  const [idxName] = (await tr.backend.list('index/')).map((o) => o.name);
  const packs = decodeIndex(await tr.repo.readObject(idxName!, ObjectKind.Index), idxName!);
  const data = packs[0]!.blobs.filter((b) => b.type === 0 && b.rawLength === size);
  assert.equal(data.length, 2);
  assert.equal(data[0]!.storedLength, data[1]!.storedLength);
  [data[0]!.offset, data[1]!.offset] = [data[1]!.offset, data[0]!.offset];
  await tr.repo.writeObject(ObjectKind.Index, encodeIndex(packs), indexName);
  await tr.backend.delete(idxName!);
  const repo = await tr.reopen();
  const target = await tempDir(t, 'rs-dst');
  await assert.rejects(restore(repo, (await repo.snapshots())[0]!, { target }), (e: unknown) => CofferError.is(e, 'corrupt') && /is not [0-9a-f]{16}/.test((e as Error).message));
  assert.deepEqual(await fs.readdir(join(target, 'd')).catch(() => []), [], 'nothing restored under the wrong name');
}

test('an index that places one blob where another is: restore refuses instead of writing the wrong bytes', async (t) => {
  // Two one-chunk files of the same length (the chunker's minimum), stored raw.
  await swappedBlobsAreRefused(t, 1024);
});

test('large blobs, whose IDs are checked on the blob-check thread, are refused the same way when the index swaps them', async (t) => {
  // 300 KiB files, over RESTORE_CHECK_OFF_THREAD_FROM, are one blob each: shorter than the
  // minimum chunk, never cut (with a 256 KiB minimum, random bytes were cut between
  // 256 and 300 KiB in about one run in 40, and the test found one blob of that size).
  await swappedBlobsAreRefused(t, 300 * 1024, { minSize: 512 * 1024, avgSize: 1024 * 1024, maxSize: 2048 * 1024 });
});

test('a failed --overwrite restore says which files it had already replaced', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'rs-src'), 'd');
  // big.bin spans two packs (packs are 8 MiB); the listing sits at the end of the second.
  // a.txt is empty: restore writes empty files before it reads any pack, so it has been
  // replaced when the damaged pack fails, whatever the order packs are read in (which
  // pack a small file's blob lands in depends on when its worker answers).
  await writeTree(src, dir({ 'a.txt': file(''), 'big.bin': file(randomBytes(10 << 20)) }));
  const r = await backup(tr.repo, { paths: [src] });
  // In big.bin's bytes of the smaller (second) pack.
  await damageSmallerOfTwoPacks(tr);

  const target = await tempDir(t, 'rs-dst');
  await fs.mkdir(join(target, 'd'));
  await fs.writeFile(join(target, 'd', 'a.txt'), 'the user\'s a\n');
  await fs.writeFile(join(target, 'd', 'big.bin'), 'the user\'s big\n');
  const repo = await tr.reopen();
  await assert.rejects(restore(repo, { id: r.id, snapshot: r.snapshot }, { target, overwrite: true }), (e: unknown) => {
    assert.ok(CofferError.is(e, 'corrupt'), String(e));
    assert.match((e as Error).message, /1 existing file\(s\) had already been replaced by their restored version \(e\.g\. .*a\.txt\)/);
    return true;
  });
  assert.equal(await fs.readFile(join(target, 'd', 'a.txt'), 'utf8'), '', 'as the message says');
  assert.equal(await fs.readFile(join(target, 'd', 'big.bin'), 'utf8'), 'the user\'s big\n', 'the failed file is untouched');
  assert.deepEqual((await fs.readdir(join(target, 'd'))).sort(), ['a.txt', 'big.bin'], 'no temporary files left');
});

test('a file that cannot be put in place fails the restore naming it, and leaves no temporary file while the pack\'s other files were being written', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'rs-src'), 'd');
  // Many one-chunk files in one pack, written as their blobs come, and one multi-chunk file.
  const entries: Record<string, ReturnType<typeof file>> = { 'big.bin': file(randomBytes(3 << 20)) };
  for (let i = 0; i < 300; i++) entries[`f${String(i).padStart(3, '0')}.txt`] = file(`small file ${i}\n`.repeat(1 + (i % 7)));
  await writeTree(src, dir(entries));
  const r = await backup(tr.repo, { paths: [src] });
  const target = await tempDir(t, 'rs-dst');
  // A non-empty directory where f150.txt belongs: renaming the restored file onto it fails.
  await fs.mkdir(join(target, 'd', 'f150.txt'), { recursive: true });
  await fs.writeFile(join(target, 'd', 'f150.txt', 'keep'), 'the user\'s\n');
  const repo = await tr.reopen();
  await assert.rejects(restore(repo, { id: r.id, snapshot: r.snapshot }, { target, overwrite: true }), (e: unknown) => {
    assert.ok(CofferError.is(e, 'storage'), String(e));
    assert.doesNotMatch((e as Error).message, /already been replaced/, 'nothing was replaced');
    assert.match((e as Error).message, /d\/f150\.txt: a directory is in the way/, 'names the file and what happened');
    assert.match((e as Error).message, /no partially written file was left in place/);
    return true;
  });
  const left = await allPaths(target);
  assert.deepEqual(left.filter((p) => p.includes('.coffer-restore-')), [], 'no temporary files left');
  assert.equal(await fs.readFile(join(target, 'd', 'f150.txt', 'keep'), 'utf8'), 'the user\'s\n', 'what was in the way is untouched');
});

test('a pack with one damaged segment: restore names only the file whose data is damaged, and the other files in that pack still restore', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'rs-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(randomBytes(300_000)), 'b.bin': file(randomBytes(300_000)) }));
  // A second name for each (after it in the snapshot's order): a hard link to a damaged
  // file is damaged too, and is named with it (it was named only on the retry without it).
  await fs.link(join(src, 'a.bin'), join(src, 'a2.bin'));
  await fs.link(join(src, 'b.bin'), join(src, 'b2.bin'));
  await backup(tr.repo, { paths: [src] });
  const packs = await tr.backend.list('data/');
  assert.equal(packs.length, 1, 'both files in one pack');
  // The pack's second segment (plaintext 64–128 KiB) lies inside the first file written.
  const p = join(tr.dir, packs[0]!.name);
  const bytes = await fs.readFile(p);
  bytes[40 + (65536 + 16) + 100]! ^= 1;
  await fs.writeFile(p, bytes);
  const repo = await tr.reopen();
  const snap = (await repo.snapshots())[0]!;
  let damaged = '';
  await assert.rejects(restore(repo, snap, { target: await tempDir(t, 'rs-dst') }), (e: unknown) => {
    assert.ok(CofferError.is(e, 'corrupt'), String(e));
    const m = /damaged data in (\S*([ab])\.bin), \S*\/([ab])2\.bin;/.exec((e as Error).message);
    assert.ok(m, (e as Error).message);
    assert.equal(m[3], m[2], 'the damaged file and its hard link');
    assert.doesNotMatch((e as Error).message, m[2] === 'a' ? /b2?\.bin/ : /a2?\.bin/, 'only the damaged file is named');
    damaged = `${m[2]}.bin`;
    return true;
  });
  const intact = damaged === 'a.bin' ? 'b.bin' : 'a.bin';
  const target = await tempDir(t, 'rs-dst2');
  const warnings: string[] = [];
  const damagedLink = damaged.replace('.bin', '2.bin');
  const intactLink = intact.replace('.bin', '2.bin');
  await restore(repo, snap, { target, select: new RestoreSelection({ exclude: [{ pattern: damaged }, { pattern: damagedLink }] }), onWarning: (w) => warnings.push(w.message) });
  assert.ok((await fs.readFile(join(target, 'd', intact))).equals(await fs.readFile(join(src, intact))));
  assert.deepEqual((await fs.readdir(join(target, 'd'))).sort(), [intact, intactLink].sort());
  assert.equal((await fs.stat(join(target, 'd', intactLink))).ino, (await fs.stat(join(target, 'd', intact))).ino, 'still one file');
  assert.ok(warnings.some((w) => /damaged/.test(w)), 'the damage is reported');
});

test('restore verify (restic\'s --verify): every restored file read back and checked chunk by chunk (hard links once); a file changed before the check fails the restore, named', async (t) => {
  const { verifyForTesting } = await import('../src/repository/restore.js');
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'rs-src'), 'd');
  const big = randomBytes(3 << 20);
  await writeTree(src, dir({ 'big.bin': file(big), 'empty': file(''), sub: dir({ 'small.txt': file('small\n') }) }));
  await fs.link(join(src, 'big.bin'), join(src, 'big-link'));
  const r0 = await backup(tr.repo, { paths: [src] });
  const snap = { id: r0.id, snapshot: r0.snapshot };
  const ok = await restore(tr.repo, snap, { target: await tempDir(t, 'rs-v1'), verify: true });
  assert.deepEqual(ok.verified, { files: 3, bytes: big.length + 6 }, 'big.bin once (its hard link is the same file), empty, small.txt');
  assert.equal((await restore(tr.repo, snap, { target: await tempDir(t, 'rs-v0') })).verified, undefined, 'only when asked');
  // One byte of big.bin changed (same size) after it was written, before it is read back.
  for (const staged of [true, false]) {
    const target = await tempDir(t, 'rs-v2');
    if (!staged) await fs.mkdir(join(target, 'd'), { recursive: true }); // not staged: the target holds a top-level name
    verifyForTesting.before = async () => {
      const fh = await fs.open(join(target, 'd', 'big.bin'), 'r+');
      await fh.write(Buffer.from([big[1 << 20]! ^ 1]), 0, 1, 1 << 20);
      await fh.close();
    };
    try {
      await assert.rejects(restore(tr.repo, snap, { target, verify: true, overwrite: true }), (e: unknown) => {
        assert.ok(CofferError.is(e, 'storage'), String(e));
        // Named by the file's first name in the listing ('big-link' sorts before 'big.bin').
        assert.match((e as Error).message, /verify: 1 restored file\(s\) differ from the snapshot when read back \(d\/big-link\)/);
        return true;
      });
    } finally {
      verifyForTesting.before = undefined;
    }
  }
});
