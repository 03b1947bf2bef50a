/**
 * Restore in windows (issue 13): the listing streams and files are restored
 * RESTORE_WINDOW_ENTRIES at a time, a pack the previous window ended in kept for the
 * next. These tests cross window boundaries: many small files, a file over many packs,
 * hard links to files of earlier windows, and a damaged or garbage pack met only in a
 * later window, which must fail the restore with a clear error and leave no file that is
 * not whole.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { CofferError, backup, restore, type TreeEntry } from '../src/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/fastcdc.js';
import { packName } from '../src/repository/blob.js';
import { RESTORE_WINDOW_ENTRIES } from '../src/repository/restore.js';
import { allPaths, assertSameTree, newRepo, prng, tempDir } from './fixtures/trees.js';

const FILES = 2 * RESTORE_WINDOW_ENTRIES + 700;

/** FILES small files over 8 directories (some empty, half compressible; ~25 MB, 3 packs or more), a symlink, a hard link across windows. */
async function manySmall(root: string): Promise<void> {
  for (let i = 0; i < FILES; i++) {
    const sub = join(root, `d${i % 8}`);
    if (i < 8) await fs.mkdir(sub, { recursive: true });
    const size = i % 97 === 0 ? 0 : i % 2 ? 100 + ((i * 389) % 3000) : 2000 + ((i * 389) % 6000);
    await fs.writeFile(join(sub, `f${String(i).padStart(5, '0')}`), i % 2 ? Buffer.alloc(size, `line ${i}\n`) : prng(i + 1, size));
  }
  await fs.symlink('d0/f00000', join(root, 'zz-link'));
  // Listed last: a hard link to a file restored windows earlier.
  await fs.link(join(root, 'd0', 'f00008'), join(root, 'zz-hard'));
}

async function snapshotOf(t: TestContext) {
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'many');
  await manySmall(src);
  await backup(tr.repo, { paths: [src] });
  const rec = (await tr.repo.snapshots()).at(-1)!;
  return { tr, src, rec };
}

test(`more files than a window (${FILES}): restored exactly, hard links across windows kept`, async (t) => {
  const { tr, src, rec } = await snapshotOf(t);
  const progress: Array<{ files: number; totalFiles?: number }> = [];
  const target = await tempDir(t, 'dst');
  const r = await restore(tr.repo, rec, { target, onProgress: (p) => progress.push({ ...p }) });
  assert.deepEqual({ files: r.files, symlinks: r.symlinks, others: r.others }, { files: FILES, symlinks: 1, others: 1 });
  await assertSameTree(src, join(target, 'many'));
  const a = await fs.stat(join(target, 'many', 'd0', 'f00008'));
  assert.equal(a.nlink, 2, 'the hard link shares its inode');
  assert.equal(progress.at(-1)?.files, r.files);
  assert.equal(progress.at(-1)?.totalFiles, rec.snapshot.stats.files);
  // Into a target that is not empty: the clash pass reads the listing first, then the restore.
  const again = await tempDir(t, 'dst2');
  await fs.writeFile(join(again, 'unrelated'), 'x');
  await restore(tr.repo, rec, { target: again });
  await assertSameTree(src, join(again, 'many'));
  await assert.rejects(restore(tr.repo, rec, { target: again }), (e: unknown) => CofferError.is(e, 'exists'));
});

test('a file over many packs and thousands of chunks restores exactly', async (t) => {
  const tr = await newRepo(t); // 4 KiB chunks: ~4,000 of them, over two packs or more
  const src = join(await tempDir(t, 'src'), 'big');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'a.bin'), prng(77, 16 << 20));
  await fs.writeFile(join(src, 'b.txt'), 'after\n');
  await backup(tr.repo, { paths: [src] });
  const rec = (await tr.repo.snapshots()).at(-1)!;
  const index = await tr.repo.index();
  const packs = new Set<string>();
  for await (const e of tr.repo.tree(rec.snapshot)) {
    if (e.type === 'file') for (const c of e.chunks) packs.add(index.get(Buffer.from(c, 'hex'))!.packId.toString('hex'));
  }
  assert.ok(packs.size >= 2, `the file spans ${packs.size} packs`);
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, rec, { target });
  await assertSameTree(src, join(target, 'big'));
});

for (const [what, damage] of [
  ['a byte flipped in its middle', (b: Buffer) => {
    const c = Buffer.from(b);
    c[c.length >> 1]! ^= 0x10;
    return c;
  }],
  // Its header kept: the pack may also hold the listing's tree blobs, at its end.
  ['with garbage over its first half', (b: Buffer) => Buffer.concat([b.subarray(0, 40), prng(99, (b.length >> 1) - 40), b.subarray(b.length >> 1)])],
] as const) {
  test(`a pack ${what}, met in a later window: restore fails 'corrupt', no temporary file left, every file there is whole`, async (t) => {
    const { tr, src, rec } = await snapshotOf(t);
    const index = await tr.repo.index();
    const entries: TreeEntry[] = [];
    for await (const e of tr.repo.tree(rec.snapshot)) entries.push(e);
    // The pack holding the data of the last non-empty file: read after the first window.
    const last = entries.filter((e) => e.type === 'file' && e.chunks.length > 0).at(-1)!;
    assert.ok(last.type === 'file');
    const packOf = (c: string) => index.get(Buffer.from(c, 'hex'))!.packId.toString('hex');
    const damaged = packOf(last.chunks[0]!);
    const firstWindow = entries.filter((e) => e.type === 'file').slice(0, RESTORE_WINDOW_ENTRIES);
    assert.ok(!firstWindow.some((e) => e.type === 'file' && e.chunks.some((c) => packOf(c) === damaged)), 'the first window does not need the damaged pack');
    const p = join(tr.dir, packName(Buffer.from(damaged, 'hex')));
    await fs.writeFile(p, damage(await fs.readFile(p)));
    const target = await tempDir(t, 'dst');
    await assert.rejects(restore(await tr.reopen(), rec, { target }), (e: unknown) => {
      assert.ok(CofferError.is(e, 'corrupt'), `expected 'corrupt', got ${String(e)}`);
      assert.match((e as Error).message, /data\/[0-9a-f]{2}\/[0-9a-f]{64}/, 'the pack is named');
      return true;
    });
    const left = await allPaths(target);
    assert.deepEqual(left.filter((x) => x.includes('.coffer-restore-')), [], 'no temporary files left');
    const rel = last.path.slice(last.path.indexOf('many/'));
    assert.ok(!left.includes(rel), 'no file where the damaged data belongs');
    let whole = 0;
    for (const x of left) {
      const st = await fs.lstat(join(target, x));
      if (!st.isFile()) continue;
      const want = await fs.readFile(join(src, x.slice('many/'.length)));
      assert.ok((await fs.readFile(join(target, x))).equals(want), `${x} is whole`);
      whole++;
    }
    assert.ok(whole >= RESTORE_WINDOW_ENTRIES - 1, `the first window's files are in place (${whole})`);
  });
}
