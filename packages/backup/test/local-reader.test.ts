/**
 * LocalBackend.openReader (issue 13): one descriptor for every piece restore reads of a
 * pack, in place of an open and a close per piece. The bytes and the errors are get's.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { CofferError, LocalBackend, Repository, backup, restore, type ByteRange } from '../src/index.js';
import type { ObjectReader } from '../src/storage/backend.js';
import { assertSameTree, dir, file, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';

test('openReader reads what get reads, range by range, short at the end; a missing object is missing-object as with get', async (t) => {
  const root = await tempDir(t, 'reader');
  const b = new LocalBackend(root);
  const bytes = prng(7, 300_000);
  await b.put('data/ab/cd', [bytes]);
  const r = await b.openReader('data/ab/cd');
  try {
    for (const range of [
      { offset: 0, length: 1 },
      { offset: 5, length: 100_000 },
      { offset: 299_990, length: 10 },
      { offset: 299_990, length: 11 }, // one past the end: 10 bytes
      { offset: 300_000, length: 5 }, // at the end: none
      { offset: 12_345, length: 200_000 },
    ]) {
      assert.deepEqual(Buffer.from(await r.read(range)), Buffer.from(await b.get('data/ab/cd', range)), JSON.stringify(range));
    }
  } finally {
    await r.close();
  }
  // Into a buffer of the caller's: a view of it, the same bytes; one too small is refused.
  const r2 = await b.openReader('data/ab/cd');
  try {
    const into = Buffer.alloc(200_001, 0xee);
    for (const range of [
      { offset: 7, length: 200_001 },
      { offset: 299_000, length: 200_001 }, // 1,000 bytes left
    ]) {
      const got = await r2.read(range, into);
      assert.equal(got.buffer, into.buffer, 'a view of the buffer given');
      assert.deepEqual(Buffer.from(got), Buffer.from(await b.get('data/ab/cd', range)), JSON.stringify(range));
    }
    await assert.rejects(r2.read({ offset: 0, length: 10 }, Buffer.alloc(9)), RangeError);
  } finally {
    await r2.close();
  }
  await r.close(); // twice: nothing
  await assert.rejects(r.read({ offset: 0, length: 1 }), /after close/);
  const viaGet = await b.get('data/ab/ef', { offset: 0, length: 1 }).catch((e: unknown) => e);
  const viaReader = await b.openReader('data/ab/ef').catch((e: unknown) => e);
  assert.ok(CofferError.is(viaReader, 'missing-object'), String(viaReader));
  assert.equal((viaReader as Error).message, (viaGet as Error).message);
});

test('restore reads each pack of a local repository through one reader, not a ranged get per piece', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'reader-src'), 'd');
  // Incompressible, so the pack holding it is larger than a read piece (1 MiB).
  await writeTree(src, dir({ 'big.bin': file(prng(3, 3_000_000)), 'small.txt': file('small\n') }));
  const r = await backup(tr.repo, { paths: [src] });

  const opened: string[] = [];
  const ranged: string[] = [];
  class Counting extends LocalBackend {
    override async get(name: string, range?: ByteRange): Promise<Uint8Array> {
      // Restore's pieces of a pack are 1 MiB (reading a tree blob asks for its segments only).
      if (range && name.startsWith('data/') && range.length === 1024 * 1024) ranged.push(name);
      return super.get(name, range);
    }
    override async openReader(name: string): Promise<ObjectReader> {
      opened.push(name);
      return super.openReader(name);
    }
  }
  const repo = await Repository.open(new Counting(tr.dir), tr.key);
  const target = await tempDir(t, 'reader-dst');
  await restore(repo, { id: r.id, snapshot: r.snapshot }, { target });
  await assertSameTree(src, join(target, 'd'));
  assert.ok(opened.length >= 1, 'a reader was opened');
  assert.deepEqual(ranged, [], 'no 1 MiB piece read with get');
  assert.equal(new Set(opened).size, opened.length, 'each pack opened once');
  assert.ok((await fs.readdir(target)).length > 0);
});

test('sync: every directory that gained an entry is synced at once; one that cannot be stays to be synced again, the others do not', async (t) => {
  const root = await tempDir(t, 'sync');
  const b = new LocalBackend(root);
  for (const name of ['data/aa/one', 'data/bb/two', 'index/three', 'snapshots/four']) await b.put(name, [Buffer.from(name)]);
  await b.sync();
  await b.sync(); // nothing dirty: nothing to do
  await b.put('data/aa/five', [Buffer.from('5')]);
  await b.put('data/bb/six', [Buffer.from('6')]);
  // data/aa cannot be opened now (moved away): the sync fails with that error and data/aa stays dirty.
  await fs.rename(join(root, 'data', 'aa'), join(root, 'aa-away'));
  await assert.rejects(b.sync(), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  await assert.rejects(b.sync(), (e: NodeJS.ErrnoException) => e.code === 'ENOENT', 'tried again on the next sync');
  await fs.rename(join(root, 'aa-away'), join(root, 'data', 'aa'));
  await b.sync();
  // data/bb was synced in the failed call: moving it away now makes no later sync fail.
  await fs.rename(join(root, 'data', 'bb'), join(root, 'bb-away'));
  await b.sync();
  assert.deepEqual(Buffer.from(await b.get('data/aa/five')), Buffer.from('5'));
});

test('sync under a low descriptor limit (ulimit -n 48): 256 dirty directories are synced a few at a time, not one descriptor each at once', async (t) => {
  const root = await tempDir(t, 'sync-fds');
  // A child with the limit: it makes 256 data/xx/ directories dirty, then syncs them.
  const script = `
    const { LocalBackend } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
    const b = new LocalBackend(${JSON.stringify(root)});
    for (let i = 0; i < 256; i++) await b.put('data/' + i.toString(16).padStart(2, '0') + '/x', [Buffer.from([i])]);
    await b.sync();
    console.log('synced');
  `;
  const r = spawnSync('bash', ['-c', 'ulimit -n 48 && exec "$0" --input-type=module -e "$1"', process.execPath, script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'synced');
});

test('a dangling symlink where an object was is damage, not a missing object: listed, and stat, get and openReader fail naming it', async (t) => {
  const root = await tempDir(t, 'dangling');
  const b = new LocalBackend(root);
  await b.put('snapshots/aa', [Buffer.from('x')]);
  await fs.rm(join(root, 'snapshots', 'aa'));
  await fs.symlink('/nonexistent/coffer-unmounted/aa', join(root, 'snapshots', 'aa'));
  assert.deepEqual((await b.list('snapshots/')).map((o) => o.name), ['snapshots/aa']);
  const named = (e: unknown) => CofferError.is(e, 'storage') && /symbolic link to something that does not exist/.test((e as Error).message);
  await assert.rejects(b.stat('snapshots/aa'), named);
  await assert.rejects(b.get('snapshots/aa'), named);
  await assert.rejects(b.openReader('snapshots/aa'), named);
  // Gone for real: missing, as before.
  await fs.rm(join(root, 'snapshots', 'aa'));
  assert.equal(await b.stat('snapshots/aa'), null);
  await assert.rejects(b.get('snapshots/aa'), (e: unknown) => CofferError.is(e, 'missing-object'));
  assert.deepEqual(await b.list('snapshots/'), []);
});
