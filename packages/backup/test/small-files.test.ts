/**
 * The small-file path (issue 13): files up to the chunker's minimum size are read,
 * hashed and compressed by the workers in batches, the parent snapshot's listing is
 * read along with the walk, and restore writes one-chunk files in one go. These tests
 * check that the result is the same as the ordinary path's: the same listing order, the
 * same chunk IDs, unchanged files not read, changing files read again.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { RestoreSelection, backup, restore, type TreeEntry } from '../src/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/fastcdc.js';
import { compareTreePaths } from '../src/repository/backup.js';
import { describeTree, newRepo, prng, tempDir } from './fixtures/trees.js';
import { prng as prngInts } from './helpers.js';

async function listing(tr: Awaited<ReturnType<typeof newRepo>>, which = -1): Promise<TreeEntry[]> {
  const all = await tr.repo.snapshots();
  const out: TreeEntry[] = [];
  for await (const e of tr.repo.tree(all.at(which)!.snapshot)) out.push(e);
  return out;
}

/**
 * The tree as describeTree sees it, times to the millisecond: restore sets times through
 * node's utimes, which takes seconds as a double (sub-microsecond digits of a 2026 time
 * do not survive), on either path.
 */
async function described(root: string): Promise<Map<string, unknown>> {
  const m = await describeTree(root);
  return new Map([...m].map(([k, v]) => [k, { ...v, mtime: Math.round(v.mtime) }]));
}

/** 240 files over nested directories: sizes 0 to 300 KiB, so both paths are taken with the default chunker. */
async function manyFiles(root: string): Promise<number> {
  let n = 0;
  for (let d = 0; d < 4; d++) {
    const sub = join(root, `d${d}`, d % 2 ? 'inner' : '');
    await fs.mkdir(sub, { recursive: true });
    for (let i = 0; i < 60; i++) {
      const size = i === 0 ? 0 : i % 25 === 7 ? 300_000 : (i * 977) % 9000;
      await fs.writeFile(join(sub, `f${i}${i % 3 ? '.txt' : '-x.bin'}`), i % 2 ? Buffer.alloc(size, `text ${i} `) : prng(i * 31 + d, size));
      n++;
    }
  }
  return n;
}

test('paths compare in listing order: a directory before its contents, siblings by name bytes', () => {
  const sorted = ['a', 'a/b', 'a/b/c', 'a/c', 'a-c', 'a.b', 'ab', 'b'].map((s) => Buffer.from(s));
  for (let i = 0; i < sorted.length; i++) {
    for (let j = 0; j < sorted.length; j++) {
      assert.equal(Math.sign(compareTreePaths(sorted[i]!, sorted[j]!)), Math.sign(i - j), `${sorted[i]} vs ${sorted[j]}`);
    }
  }
});

test('paths compare as their components do, one by one: random paths of bytes around the separator', () => {
  // Spec §9.3 written out: split at '/', compare component by component, a path that runs
  // out of components first comes first.
  const byComponents = (a: Buffer, b: Buffer) => {
    const x = a.toString('latin1').split('/');
    const y = b.toString('latin1').split('/');
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      const c = Buffer.compare(Buffer.from(x[i]!, 'latin1'), Buffer.from(y[i]!, 'latin1'));
      if (c !== 0) return c;
    }
    return Math.sign(x.length - y.length);
  };
  const next = prngInts(20261201);
  const alphabet = [0x2d, 0x2e, 0x2f, 0x30, 0x61, 0x62, 0x00, 0x7f, 0x80, 0xff];
  const path = () => Buffer.from(Array.from({ length: next() % 7 }, () => alphabet[next() % alphabet.length]!));
  for (let k = 0; k < 50_000; k++) {
    const a = path();
    // Half the time b shares a prefix with a, where the two differ at or after a separator.
    const b = k % 2 ? path() : Buffer.concat([a.subarray(0, next() % (a.length + 1)), path()]);
    assert.equal(Math.sign(compareTreePaths(a, b)), byComponents(a, b), `${JSON.stringify(a.toString('latin1'))} vs ${JSON.stringify(b.toString('latin1'))}`);
  }
});

test('many small files back up and restore exactly; each file is read once', async (t) => {
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'many');
  const n = await manyFiles(src);
  const r = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(r.warnings, []);
  assert.equal(r.read.files, n);
  assert.equal(r.snapshot.stats.files, n);
  // Listing order: every entry after the one before it.
  const list = await listing(tr);
  for (let i = 1; i < list.length; i++) assert.ok(compareTreePaths(list[i - 1]!.rawPath, list[i]!.rawPath) < 0, list[i]!.path);
  // One chunk per non-empty small file; empty files have none.
  for (const e of list) if (e.type === 'file' && e.size <= DEFAULT_CHUNKER.minSize) assert.equal(e.chunks.length, e.size === 0 ? 0 : 1, e.path);
  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  const res = await restore(tr.repo, rec!, { target });
  assert.equal(res.files, n);
  assert.deepEqual(await described(join(target, 'many')), await described(src));
});

test('a restore sized from the snapshot\'s file count and one grown as the listing is read (a selection) give the same tree', async (t) => {
  // Over 1,024 files: the restore's file table starts that large when it grows as it goes.
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'grow');
  for (let d = 0; d < 3; d++) {
    await fs.mkdir(join(src, `d${d}`), { recursive: true });
    for (let i = 0; i < 900; i++) await fs.writeFile(join(src, `d${d}`, `f${i}`), i % 5 === 0 ? '' : `file ${d}/${i} `.repeat(1 + (i % 7)));
  }
  const r = await backup(tr.repo, { paths: [src] });
  assert.equal(r.snapshot.stats.files, 2700);
  const [rec] = await tr.repo.snapshots();
  const whole = await tempDir(t, 'dst-whole');
  assert.equal((await restore(tr.repo, rec!, { target: whole })).files, 2700);
  assert.deepEqual(await described(join(whole, 'grow')), await described(src));
  const chosen = await tempDir(t, 'dst-select');
  const select = new RestoreSelection({ include: [{ pattern: 'grow' }] });
  assert.equal((await restore(tr.repo, rec!, { target: chosen, select })).files, 2700);
  assert.deepEqual(await described(join(chosen, 'grow')), await described(src));
});

test('a small file gets the same chunk ID whichever path reads it', async (t) => {
  // Hashed in a worker's batch: the ID must be the repository key's chunk ID of the
  // content (spec §6.2), as restore and check recompute it.
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'ids');
  await fs.mkdir(src);
  const data = prng(7, 5000);
  await fs.writeFile(join(src, 'x'), data);
  await backup(tr.repo, { paths: [src] });
  const x = (await listing(tr)).find((e) => e.path.endsWith('/x'));
  assert.ok(x && x.type === 'file');
  assert.deepEqual(x.chunks, [tr.repo.keys.chunkId(data).toString('hex')]);
});

test('second backup: unchanged files are not read, changed and new ones are, in a tree whose names sort differently as bytes and as paths', async (t) => {
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'order');
  // "a-c" < "a/…" as plain bytes, but the directory "a" and its contents come first.
  for (const d of ['a', 'a-c', 'a.b', 'ab']) {
    await fs.mkdir(join(src, d), { recursive: true });
    for (let i = 0; i < 30; i++) await fs.writeFile(join(src, d, `f${i}`), `${d} ${i}\n`.repeat(i + 1));
  }
  await fs.writeFile(join(src, 'a-c', 'x'), 'top');
  const first = await backup(tr.repo, { paths: [src] });
  assert.equal(first.read.files, 121);
  const again = await backup(tr.repo, { paths: [src] });
  assert.equal(again.read.files, 0);
  await fs.appendFile(join(src, 'a', 'f3'), 'more');
  await fs.writeFile(join(src, 'a.b', 'new'), 'new file');
  const third = await backup(tr.repo, { paths: [src] });
  assert.equal(third.read.files, 2);
  const [, , rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, rec!, { target });
  assert.deepEqual(await described(join(target, 'order')), await described(src));
});

test('a small file that changes while it is read is read again; the stored copy is the new one', async (t) => {
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'busy');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'grows.txt'), 'small');
  await fs.writeFile(join(src, 'keeps.txt'), 'changing');
  let changed = false;
  const r = await backup(tr.repo, {
    paths: [src],
    afterFileRead: async (p) => {
      const name = p.toString('utf8');
      // Grows past the small-file limit: the second read is an ordinary, chunked one.
      if (name.endsWith('grows.txt') && !changed) {
        changed = true;
        await fs.writeFile(p, prng(3, 600_000));
      }
      if (name.endsWith('keeps.txt')) await fs.appendFile(p, '!');
    },
  });
  assert.deepEqual(
    r.warnings.map((w) => [w.path.endsWith('keeps.txt'), /changed while/.test(w.message)]),
    [[true, true]],
  );
  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, rec!, { target });
  assert.deepEqual(await fs.readFile(join(target, 'busy/grows.txt')), prng(3, 600_000));
});

test('a small file that cannot be opened is reported and left out; the rest is backed up', { skip: process.getuid?.() === 0 && 'root reads any file' }, async (t) => {
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'perm');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'a.txt'), 'a');
  await fs.writeFile(join(src, 'secret.txt'), 's');
  await fs.chmod(join(src, 'secret.txt'), 0);
  await fs.writeFile(join(src, 'z.txt'), 'z');
  const r = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(r.warnings.map((w) => [w.path.endsWith('secret.txt'), w.message]), [[true, 'cannot read: permission denied']]);
  assert.deepEqual((await listing(tr)).map((e) => e.path.split('/').pop()), ['perm', 'a.txt', 'z.txt']);
});

test('a second backup whose parent holds large files starts both chunk workers at once; one of small files starts one', async (t) => {
  const started = { n: 0 };
  const count = () => started.n++;
  process.on('worker', count);
  t.after(() => process.off('worker', count));
  const workersFor = async (root: string) => {
    const tr = await newRepo(t, DEFAULT_CHUNKER);
    await backup(tr.repo, { paths: [root], scanAhead: false });
    started.n = 0;
    // Nothing changed: no file is read, so any worker beyond the first was started ahead.
    await backup(tr.repo, { paths: [root], scanAhead: false });
    return started.n;
  };
  const large = await tempDir(t, 'prestart-large');
  // 130 MiB, sparse: two chunk regions' worth of bytes, few to write.
  const fh = await fs.open(join(large, 'db'), 'w');
  await fh.truncate(130 * 1024 * 1024);
  await fh.write(prng(3, 4096), 0, 4096, 64 * 1024 * 1024);
  await fh.close();
  assert.equal(await workersFor(large), 2);
  const small = await tempDir(t, 'prestart-small');
  for (let i = 0; i < 20; i++) await fs.writeFile(join(small, `f${i}`), prng(i, 2000));
  assert.equal(await workersFor(small), 1);
});
