/**
 * A restore into a target that holds none of its top-level names is built in a staging
 * directory inside the target (`.coffer-restore-<random>`), every file made under its own
 * name, and its top-level entries are moved into place at the end (spec §9.4): the
 * target then holds each of them whole or not at all, and a failure leaves nothing of the
 * restore there. A target that already holds one of them is restored file by file, each
 * file under a temporary name renamed into place, as before.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type * as FsModule from 'node:fs';
import { promises as fs } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { CofferError, backup, restore } from '../src/index.js';
import { restoreStagingForTesting, restoreWriterForTesting } from '../src/repository/restore.js';
import { xattrs } from '../src/repository/fs-meta.js';
import { allPaths, assertSameTree, damageSmallerOfTwoPacks, dir, file, link, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';

/** A Latin-1 name, not valid UTF-8. */
const LATIN1 = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x2e, 0x74, 0x78, 0x74]); // "café.txt" in Latin-1

/** A tree with small files, a multi-chunk file, an empty file, symlinks, a hard link and a non-UTF-8 name; backed up. */
async function mixedTree(t: TestContext) {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'stg-src');
  const src = join(base, 'd');
  const small: Record<string, ReturnType<typeof file>> = {};
  for (let i = 0; i < 40; i++) small[`f${i}.txt`] = file(`small ${i}\n`.repeat(1 + i), 0o640, 1_600_000_000_000 + i * 1000);
  await writeTree(
    src,
    dir({
      'big.bin': file(prng(7, 300_000), 0o600, 1_500_000_000_000),
      'empty.txt': file(''),
      sub: dir({ ...small, deeper: dir({ 'x.txt': file('x') }, 0o700, 1_400_000_000_000) }, 0o750, 1_450_000_000_000),
      'to-big': link('big.bin'),
      dangling: link('/nowhere/at/all'),
    }),
  );
  await fs.link(join(src, 'sub', 'f3.txt'), join(src, 'hard.txt'));
  // A second root (a second top-level name), holding the non-UTF-8 name (which the tree comparison cannot read).
  await fs.mkdir(join(base, 'e'));
  await fs.writeFile(Buffer.concat([Buffer.from(`${base}/e/`), LATIN1]), 'latin-1 name\n');
  const r = await backup(tr.repo, { paths: [src, join(base, 'e')] });
  return { tr, src, rec: { id: r.id, snapshot: r.snapshot } };
}

async function assertRestored(src: string, target: string): Promise<void> {
  await assertSameTree(src, join(target, 'd'));
  assert.deepEqual(await fs.readdir(join(target, 'e'), { encoding: 'buffer' }), [LATIN1], 'the Latin-1 name, byte for byte');
  assert.equal((await fs.readFile(Buffer.concat([Buffer.from(`${target}/e/`), LATIN1]))).toString(), 'latin-1 name\n');
  const a = await fs.stat(join(target, 'd', 'hard.txt'));
  const b = await fs.stat(join(target, 'd', 'sub', 'f3.txt'));
  assert.equal(a.ino, b.ino, 'the hard link is a link');
  assert.equal(a.nlink, 2);
  assert.deepEqual((await allPaths(target)).filter((p) => p.includes('.coffer-restore-')), [], 'no staging directory or temporary name left');
}

for (const threads of [false, true]) {
  test(`a missing target and an empty one are built aside and come back exactly${threads ? ' (small files on the writer threads)' : ''}`, async (t) => {
    const { tr, src, rec } = await mixedTree(t);
    if (threads) {
      restoreWriterForTesting.minFiles = 0;
      t.after(() => {
        restoreWriterForTesting.minFiles = 1000;
      });
    }
    const base = await tempDir(t, 'stg-dst');
    const missing = join(base, 'not', 'yet');
    await restore(tr.repo, rec, { target: missing });
    assert.equal(restoreStagingForTesting.staged, true);
    await assertRestored(src, missing);
    if (threads) assert.ok(restoreWriterForTesting.started > 0, 'the writer threads wrote');

    // An empty directory keeps its own mode.
    const empty = join(base, 'empty');
    await fs.mkdir(empty, 0o750);
    await fs.chmod(empty, 0o750);
    await restore(tr.repo, rec, { target: empty });
    assert.equal(restoreStagingForTesting.staged, true);
    await assertRestored(src, empty);
    assert.equal((await fs.stat(empty)).mode & 0o7777, 0o750, "the target's own mode is kept");
  });
}

test('the per-file way (staging off) restores the same tree', async (t) => {
  const { tr, src, rec } = await mixedTree(t);
  restoreStagingForTesting.off = true;
  t.after(() => {
    restoreStagingForTesting.off = false;
  });
  const target = await tempDir(t, 'stg-off');
  await restore(tr.repo, rec, { target });
  assert.equal(restoreStagingForTesting.staged, false);
  await assertRestored(src, target);
});

test('a target that holds one of the top-level names is restored file by file beside what is there', async (t) => {
  const { tr, src, rec } = await mixedTree(t);
  const target = await tempDir(t, 'stg-busy');
  await fs.mkdir(join(target, 'd'));
  await fs.writeFile(join(target, 'd', 'mine.txt'), "the user's\n");
  await fs.writeFile(join(target, 'other.txt'), "the user's too\n");
  await restore(tr.repo, rec, { target });
  assert.equal(restoreStagingForTesting.staged, false);
  assert.equal(await fs.readFile(join(target, 'd', 'mine.txt'), 'utf8'), "the user's\n");
  await fs.rm(join(target, 'd', 'mine.txt'));
  await assertRestored(src, target);
  assert.equal(await fs.readFile(join(target, 'other.txt'), 'utf8'), "the user's too\n");
  // A file in the way is refused before anything is written, as before.
  await assert.rejects(restore(tr.repo, rec, { target }), (e: unknown) => CofferError.is(e, 'exists'));
});

test('a staged restore that fails midway leaves nothing of it at the target, and no staging directory', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'stg-src'), 'd');
  // big.bin spans two packs (packs are 8 MiB); a.txt is empty, so it is written before any
  // pack is read: restored file by file, it was in place when the damaged pack failed.
  const small: Record<string, ReturnType<typeof file>> = { 'a.txt': file(''), 'big.bin': file(randomBytes(10 << 20)) };
  for (let i = 0; i < 50; i++) small[`s${i}.txt`] = file(`small ${i}\n`);
  await writeTree(src, dir(small));
  const r = await backup(tr.repo, { paths: [src] });
  // In big.bin's bytes of the smaller (second) pack.
  await damageSmallerOfTwoPacks(tr);
  const repo = await tr.reopen();
  const target = await tempDir(t, 'stg-fail');
  await fs.writeFile(join(target, 'unrelated.txt'), "the user's\n");
  await assert.rejects(restore(repo, { id: r.id, snapshot: r.snapshot }, { target }), (e: unknown) => CofferError.is(e, 'corrupt'));
  assert.deepEqual(await allPaths(target), ['unrelated.txt'], 'only what was there before');
  assert.equal(restoreStagingForTesting.staged, true);
});

const cjsFs = createRequire(import.meta.url)('node:fs') as typeof FsModule;

/** Runs fn counting fchmodSync calls on files (restore's whole small files on the main thread; directories' metadata uses it too, not counted). */
async function countingFchmods(fn: () => Promise<void>): Promise<number> {
  const real = cjsFs.fchmodSync;
  let n = 0;
  cjsFs.fchmodSync = ((fd: number, mode: FsModule.Mode) => {
    if (!cjsFs.fstatSync(fd).isDirectory()) n++;
    real(fd, mode);
  }) as typeof cjsFs.fchmodSync;
  syncBuiltinESMExports();
  try {
    await fn();
  } finally {
    cjsFs.fchmodSync = real;
    syncBuiltinESMExports();
  }
  return n;
}

test('staged, a file whose mode the umask leaves whole is created with that mode, not chmod\'ed after; the others are', { skip: (process.platform !== 'linux' || !xattrs()) && 'Linux with the xattr binding (to see no default ACL)' }, async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'stg-mode-src'), 'd');
  const plain: Record<string, ReturnType<typeof file>> = {};
  for (let i = 0; i < 10; i++) plain[`p${i}.txt`] = file(`plain ${i}\n`, i % 2 ? 0o644 : 0o600);
  // 0o666: the umask (0o022) would take group and other write; 0o1755: a sticky bit.
  await writeTree(src, dir({ ...plain, 'open.txt': file('open\n', 0o666), 'sticky.bin': file('sticky\n', 0o1755) }));
  const r = await backup(tr.repo, { paths: [src] });
  const old = process.umask(0o022);
  t.after(() => process.umask(old));
  const staged = await tempDir(t, 'stg-mode');
  const n = await countingFchmods(() => restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target: staged }).then(() => {}));
  assert.equal(restoreStagingForTesting.staged, true);
  await assertSameTree(src, join(staged, 'd'));
  assert.equal(n, 2, 'open.txt and sticky.bin only');
  // File by file, every file is created 0600 and chmod'ed.
  restoreStagingForTesting.off = true;
  t.after(() => {
    restoreStagingForTesting.off = false;
  });
  const perFile = await tempDir(t, 'stg-mode-off');
  assert.equal(await countingFchmods(() => restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target: perFile }).then(() => {})), 12);
  await assertSameTree(src, join(perFile, 'd'));
});

test('a name that appears in the target during a staged restore is not replaced (unless --overwrite): file or directory', async (t) => {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'stg-race-src');
  await writeTree(base, dir({ 'a.txt': file('restored a\n'), d: dir({ 'x.txt': file('restored x\n') }) }));
  const r = await backup(tr.repo, { paths: [join(base, 'a.txt'), join(base, 'd')] });
  const snap = { id: r.id, snapshot: r.snapshot };
  t.after(() => {
    delete restoreStagingForTesting.beforeMove;
  });
  const staging = async (target: string) => (await fs.readdir(target)).filter((n) => n.startsWith('.coffer-restore-'));

  // A file at a file's name.
  const t1 = await tempDir(t, 'stg-race-1');
  restoreStagingForTesting.beforeMove = () => fs.writeFile(join(t1, 'a.txt'), "the user's a\n");
  await assert.rejects(restore(tr.repo, snap, { target: t1 }), (e: unknown) => CofferError.is(e, 'exists') && /a\.txt appeared in the target/.test((e as Error).message));
  assert.equal(restoreStagingForTesting.staged, true);
  assert.equal(await fs.readFile(join(t1, 'a.txt'), 'utf8'), "the user's a\n");
  assert.deepEqual(await staging(t1), []);

  // Something at a directory's name.
  const t2 = await tempDir(t, 'stg-race-2');
  restoreStagingForTesting.beforeMove = async () => {
    await fs.mkdir(join(t2, 'd'));
    await fs.writeFile(join(t2, 'd', 'mine.txt'), 'mine\n');
  };
  await assert.rejects(restore(tr.repo, snap, { target: t2 }), (e: unknown) => CofferError.is(e, 'exists') && /d appeared in the target/.test((e as Error).message));
  assert.deepEqual((await fs.readdir(join(t2, 'd'))).sort(), ['mine.txt']);
  assert.deepEqual(await staging(t2), []);

  // With --overwrite the restored file replaces it.
  const t3 = await tempDir(t, 'stg-race-3');
  restoreStagingForTesting.beforeMove = () => fs.writeFile(join(t3, 'a.txt'), "the user's a\n");
  await restore(tr.repo, snap, { target: t3, overwrite: true });
  assert.equal(await fs.readFile(join(t3, 'a.txt'), 'utf8'), 'restored a\n');
  assert.equal(await fs.readFile(join(t3, 'd', 'x.txt'), 'utf8'), 'restored x\n');
  assert.deepEqual(await staging(t3), []);

  // Nothing appeared: both in place, nothing left behind.
  const t4 = await tempDir(t, 'stg-race-4');
  delete restoreStagingForTesting.beforeMove;
  await restore(tr.repo, snap, { target: t4 });
  assert.deepEqual((await fs.readdir(t4)).sort(), ['a.txt', 'd']);
  assert.equal((await fs.lstat(join(t4, 'a.txt'))).nlink, 1);
});
