/**
 * `coffer copy` (copy.ts, spec §10 `original`): snapshots move between repositories with
 * different keys, deduplicated in the destination, and a second run skips what was
 * copied (through copies of copies too); a version 1 repository's snapshot copies into a
 * version 2 one and restores exactly.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BackupKey, CofferError, DEFAULT_CHUNKER, LocalBackend, Repository, backup, check, copySnapshots, hex, restore, type ByteRange, type ObjectReader } from '../src/index.js';
import { SMALL_CHUNKER, assertSameTree, dir, file, newRepo, prng, sampleTree, tempDir, writeTree } from './fixtures/trees.js';

const isCode = (code: string, msg?: RegExp) => (e: unknown) => e instanceof CofferError && e.code === code && (!msg || msg.test(e.message));

async function objects(repo: Repository): Promise<string[]> {
  return (await repo.backend.list('')).map((o) => o.name).filter((n) => !n.startsWith('locks/'));
}

test('copy between repositories with different keys: every snapshot, restorable, checked, with its original ID and metadata', async (t) => {
  const a = await newRepo(t);
  const b = await newRepo(t, { minSize: 2048, avgSize: 8192, maxSize: 32768 }); // other chunker parameters too
  assert.notEqual(a.key.keyId().toString(), b.key.keyId().toString());
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, sampleTree(1));
  const s1 = await backup(a.repo, { paths: [src], tags: ['first'] });
  await writeTree(join(src, 'more'), dir({ 'x.bin': file(prng(2, 80_000)) }));
  const s2 = await backup(a.repo, { paths: [src], tags: ['second'] });

  const progress: number[] = [];
  const r = await copySnapshots(a.repo, b.repo, { onProgress: (p) => progress.push(p.snapshots) });
  assert.deepEqual(r.copied.map((c) => c.source), [hex(s1.id), hex(s2.id)]);
  assert.deepEqual(r.skipped, []);
  assert.ok(progress.includes(2), 'progress reaches the last snapshot');

  const dst = await b.reopen();
  const snaps = await dst.snapshots();
  assert.equal(snaps.length, 2);
  for (const [i, orig] of [s1, s2].entries()) {
    const copy = snaps[i]!;
    assert.equal(copy.snapshot.original, hex(orig.id));
    assert.equal(copy.snapshot.time, orig.snapshot.time);
    assert.deepEqual(copy.snapshot.paths, orig.snapshot.paths);
    assert.deepEqual(copy.snapshot.tags, orig.snapshot.tags);
    assert.equal(copy.snapshot.hostname, orig.snapshot.hostname);
    assert.notEqual(hex(copy.id), hex(orig.id), 'a new ID');
  }
  const out = await tempDir(t, 'out');
  await restore(dst, snaps[1]!, { target: out });
  await assertSameTree(src, join(out, 'data'));
  assert.deepEqual((await check(dst, { readData: true })).problems, []);
  // The source is untouched and still whole.
  assert.equal((await a.repo.snapshots()).length, 2);
  assert.deepEqual((await check(a.repo, { readData: true })).problems, []);
});

test('a second copy skips what is there and writes nothing; copies of copies are recognised by their original', async (t) => {
  const a = await newRepo(t);
  const b = await newRepo(t);
  const c = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, sampleTree(3));
  const s1 = await backup(a.repo, { paths: [src] });
  await copySnapshots(a.repo, b.repo);
  const before = await objects(b.repo);
  const again = await copySnapshots(a.repo, b.repo);
  assert.deepEqual(again.copied, []);
  assert.equal(again.skipped.length, 1);
  assert.equal(again.skipped[0]!.source, hex(s1.id));
  assert.deepEqual(await objects(b.repo), before, 'nothing written');

  // B → C, then A → C: C's copy came from B's copy, whose original is A's snapshot.
  const bc = await copySnapshots(await b.reopen(), c.repo);
  assert.equal(bc.copied.length, 1);
  const cSnap = (await (await c.reopen()).snapshots())[0]!;
  assert.equal(cSnap.snapshot.original, hex(s1.id), 'the first original, not the intermediate copy');
  const ac = await copySnapshots(a.repo, await c.reopen());
  assert.deepEqual(ac.copied, []);
  assert.equal(ac.skipped[0]!.existing, hex(cSnap.id));
  // Nor is the original copied back into its own repository.
  const back = await copySnapshots(await c.reopen(), a.repo);
  assert.deepEqual(back.copied, []);
});

test('copy deduplicates in the destination: data already there (a direct backup, an earlier copy) is not stored again, and later backups deduplicate against copies', async (t) => {
  const a = await newRepo(t);
  const b = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, dir({ 'big.bin': file(prng(7, 400_000)), 'small.txt': file('hello\n') }));
  await backup(b.repo, { paths: [src] }); // B backed up the same files itself
  const s = await backup(a.repo, { paths: [src] });
  const r = await copySnapshots(a.repo, await b.reopen());
  assert.equal(r.copied.length, 1);
  assert.ok(r.copied[0]!.addedBytes < 20_000, `only tree data is new (${r.copied[0]!.addedBytes} bytes)`);
  // A second snapshot of A sharing most data: the copy adds only the new part.
  await writeTree(join(src, 'new.bin'), file(prng(8, 50_000)));
  await backup(a.repo, { paths: [src] });
  const r2 = await copySnapshots(a.repo, await b.reopen());
  assert.equal(r2.copied.length, 1);
  assert.equal(r2.skipped[0]!.source, hex(s.id));
  assert.ok(r2.copied[0]!.addedBytes < 90_000 && r2.copied[0]!.addedBytes >= 50_000, `${r2.copied[0]!.addedBytes}`);
  // After moving to B, B's own next backup deduplicates against what was copied.
  const c = await newRepo(t);
  await copySnapshots(a.repo, c.repo);
  const next = await backup(await c.reopen(), { paths: [src], parent: 'none' });
  assert.ok(next.snapshot.stats.addedBytes < 20_000, `a backup after the copy adds ${next.snapshot.stats.addedBytes} bytes`);
});

test('copy reads small files a segment at a time, not a ranged read (and a segment decrypted) per file; the second snapshot\'s unchanged files are not read again', async (t) => {
  const a = await newRepo(t, DEFAULT_CHUNKER); // a file is one chunk, the file list a blob or two
  const b = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  const files: Record<string, ReturnType<typeof file>> = {};
  for (let i = 0; i < 200; i++) files[`f${i}`] = file(prng(100 + i, 1000));
  await writeTree(src, dir(files));
  await backup(a.repo, { paths: [src] });
  await backup(a.repo, { paths: [src], parent: 'none' });
  // Reads of the source's packs, through ranged gets and held-open readers alike.
  let reads = 0;
  class Counting extends LocalBackend {
    override get(name: string, range?: ByteRange): Promise<Uint8Array> {
      if (name.startsWith('data/')) reads++;
      return super.get(name, range);
    }
    override async openReader(name: string): Promise<ObjectReader> {
      const r = await super.openReader(name);
      return { read: (range, into) => (reads++, r.read(range, into)), close: () => r.close() };
    }
  }
  const r = await copySnapshots(await a.reopen(new Counting(a.dir)), b.repo);
  assert.equal(r.copied.length, 2);
  // 200 KB of files: 4 segments of 64 KiB, a pack header and the file lists (12 reads).
  // Read one blob at a time, each file cost two (the pack's header, its segments): 400.
  assert.ok(reads < 40, `${reads} reads of the source's packs for 200 small files in two snapshots`);
  const out = await tempDir(t, 'out');
  const dst = await b.reopen();
  await restore(dst, (await dst.snapshots())[1]!, { target: out });
  await assertSameTree(src, join(out, 'data'));
});

test('copy of chosen snapshots (ID prefix, latest); bad references and the same repository are refused', async (t) => {
  const a = await newRepo(t);
  const b = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    await writeTree(src, dir({ [`f${i}`]: file(`file ${i}\n`) }));
    ids.push(hex((await backup(a.repo, { paths: [src] })).id));
  }
  const r = await copySnapshots(a.repo, b.repo, { snapshots: [ids[0]!.slice(0, 8), 'latest', ids[0]!] });
  assert.deepEqual(r.copied.map((c) => c.source), [ids[0], ids[2]], 'each once, in the order given');
  await assert.rejects(copySnapshots(a.repo, b.repo, { snapshots: ['ffffffff'] }), isCode('not-found'));
  await assert.rejects(copySnapshots(a.repo, b.repo, { snapshots: ['xyz'] }), isCode('invalid-argument'));
  await assert.rejects(copySnapshots(a.repo, await a.reopen()), isCode('invalid-argument', /same repository/));
  assert.equal((await (await b.reopen()).snapshots()).length, 2, 'a refused copy wrote no snapshot');
});

test('a format version 1 repository (HMAC-SHA256 chunk IDs) copies into a new one (version 4, keyed BLAKE3 chunk IDs: every ID made again) and restores exactly', async (t) => {
  const REPOS = fileURLToPath(new URL('../../../../spec/vectors/backup/repositories/', import.meta.url));
  const v = JSON.parse(readFileSync(join(REPOS, 'v1.json'), 'utf8')) as { key: string; directory: string; entries: Array<{ path: string; type: string; sha256?: string; mode?: number }> };
  const srcDir = join(await tempDir(t, 'v1'), 'repo');
  await fs.cp(join(REPOS, v.directory), srcDir, { recursive: true });
  const v1 = await Repository.open(new LocalBackend(srcDir), BackupKey.fromBytes(Buffer.from(v.key, 'hex')));
  assert.equal(v1.config.version, 1);
  assert.equal(v1.keys.chunkIdFunction, 'hmac-sha256');
  const dstDir = await tempDir(t, 'v2');
  const key = BackupKey.generate();
  const v2 = await Repository.init(new LocalBackend(dstDir), key, { chunker: SMALL_CHUNKER });
  assert.equal(v2.keys.chunkIdFunction, 'blake3');
  const r = await copySnapshots(v1, v2);
  assert.equal(r.copied.length, 1);
  const snap = (await v2.snapshots())[0]!;
  assert.equal(snap.snapshot.version, 2);
  const target = await tempDir(t, 'out');
  await restore(v2, snap, { target });
  for (const e of v.entries) {
    if (e.type !== 'file') continue;
    const data = await fs.readFile(join(target, e.path));
    assert.equal(createHash('sha256').update(data).digest('hex'), e.sha256, e.path);
    assert.equal((await fs.stat(join(target, e.path))).mode & 0o7777, e.mode, e.path);
  }
  assert.deepEqual((await check(v2, { readData: true })).problems, []);
  // Into a version 1 repository nothing is written.
  await assert.rejects(copySnapshots(v2, v1), isCode('unsupported-version'));
});
