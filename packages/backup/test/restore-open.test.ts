/**
 * A file restored piece by piece (many chunks) is opened once, not once per piece: its
 * descriptor stays open for its next piece (restore.ts keptOpen, at most KEPT_OPEN_FILES
 * files, within the RESTORE_OPEN_FILES bound). The bytes, modes and times are the same
 * whether kept open or closed after every piece.
 */
import assert from 'node:assert/strict';
import type * as FsModule from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { backup, restore } from '../src/index.js';
import { restoreKeptForTesting } from '../src/repository/restore.js';
import { allPaths, assertSameTree, dir, file, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';

const cjsFs = createRequire(import.meta.url)('node:fs') as typeof FsModule;

/**
 * Runs fn counting fs.open calls on the files being restored (the callback open restore
 * uses for pieces): their temporary names, or in a staged restore (a fresh target) their
 * own names, which here end in `.bin`.
 */
async function countingTmpOpens(fn: () => Promise<void>): Promise<number> {
  const real = cjsFs.open;
  let n = 0;
  cjsFs.open = function (this: unknown, path: unknown, ...rest: unknown[]) {
    if (Buffer.isBuffer(path) && (path.includes('.coffer-restore-') || path.toString('latin1').endsWith('.bin'))) n++;
    return (real as (...a: unknown[]) => void).call(this, path, ...rest);
  } as typeof cjsFs.open;
  syncBuiltinESMExports();
  try {
    await fn();
  } finally {
    cjsFs.open = real;
    syncBuiltinESMExports();
  }
  return n;
}

async function threeBigFiles(t: TestContext) {
  const tr = await newRepo(t); // small chunks (4 KiB on average): each file is ~100 pieces
  const src = join(await tempDir(t, 'open-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(1, 400_000), 0o640, 1_600_000_000_123), 'b.bin': file(prng(2, 300_000), 0o600, 1_500_000_000_000), sub: dir({ 'c.bin': file(prng(3, 500_000)) }) }));
  return { tr, src, r: await backup(tr.repo, { paths: [src] }) };
}

test('a file of many pieces is opened once for them all, and restores exactly', async (t) => {
  const { tr, src, r } = await threeBigFiles(t);
  const target = await tempDir(t, 'open-dst');
  const opens = await countingTmpOpens(async () => {
    await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target });
  });
  await assertSameTree(src, join(target, 'd'));
  assert.ok(opens <= 3 * 2, `${opens} opens of temporary files for 3 files of ~100 pieces each`);
  assert.deepEqual((await allPaths(target)).filter((p) => p.includes('.coffer-restore-')), []);
});

test('closed after every piece (none kept open), the same files come back', async (t) => {
  const { tr, src, r } = await threeBigFiles(t);
  restoreKeptForTesting.kept = 0;
  t.after(() => {
    restoreKeptForTesting.kept = 8;
  });
  const target = await tempDir(t, 'open-dst0');
  const opens = await countingTmpOpens(async () => {
    await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target });
  });
  await assertSameTree(src, join(target, 'd'));
  assert.ok(opens > 100, `${opens} opens: one per piece`);
});
