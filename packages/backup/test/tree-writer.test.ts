/**
 * TreeWriter (backup.ts): the listing is cut into Tree blobs and each is handed to
 * `store` without waiting for it, up to TREE_STORE_AHEAD_BYTES in flight (issue 13: the
 * walk waited for every tree blob's compression). IDs still come back in listing order,
 * the window is bounded, and a failed store fails the listing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TreeWriter } from '../src/repository/backup.js';
import { FastCdc, type ChunkerParams } from '../src/chunker/fastcdc.js';
import { BackupKey } from '../src/crypto/backup-key.js';
import { RepositoryKeys } from '../src/crypto/repository-keys.js';
import type { TreeEntry } from '../src/repository/tree.js';
import { bytes } from './helpers.js';

const SMALL: ChunkerParams = { minSize: 2048, avgSize: 8192, maxSize: 32768 };
const cdc = () => new FastCdc(new RepositoryKeys(BackupKey.fromBytes(bytes(32, 3)), bytes(16, 1)).gearTable, SMALL);

interface Stored {
  raw: Buffer;
  resolve: (id: string) => void;
  reject: (e: Error) => void;
}
function deferredStore(): { stored: Stored[]; store: (raw: Buffer) => Promise<string> } {
  const stored: Stored[] = [];
  return {
    stored,
    store: (raw) =>
      new Promise<string>((resolve, reject) => {
        stored.push({ raw, resolve, reject });
      }),
  };
}

const entry = (i: number): TreeEntry => ({
  path: `dir/file-${i.toString().padStart(7, '0')}-${'x'.repeat(i % 37)}`,
  rawPath: Buffer.from(`dir/file-${i.toString().padStart(7, '0')}-${'x'.repeat(i % 37)}`),
  type: 'dir',
  mode: 0o755,
  mtimeNs: BigInt(i) * 1_000_000_007n,
});

/** Writes entries until `bytes` of listing have been written, awaiting what write returns. */
async function writeListing(w: TreeWriter, bytes: number, from = 0): Promise<number> {
  let i = from;
  let total = 0;
  while (total < bytes) {
    const e = entry(i++);
    total += e.path.length + 80;
    const p = w.write(e);
    if (p) await p;
  }
  return i;
}

test('tree blobs are stored without waiting for each one; their IDs come back in listing order', async () => {
  const { stored, store } = deferredStore();
  const w = new TreeWriter(cdc(), store);
  // ~1.5 MiB of listing: more than maxSize + 1 MiB, so blobs are cut while writing, and
  // under the 4 MiB window, so writing never waits for a store.
  await writeListing(w, 1536 * 1024);
  assert.ok(stored.length >= 20, `blobs cut while writing (${stored.length}), none stored yet`);
  const cutWhileWriting = stored.length;
  const done = w.finish();
  await new Promise((r) => setImmediate(r));
  assert.ok(stored.length > cutWhileWriting, 'finish cuts the rest');
  // Stored in reverse order: the IDs are still in listing order.
  for (let k = stored.length - 1; k >= 0; k--) stored[k]!.resolve(`id-${k}`);
  assert.deepEqual(await done, stored.map((_, k) => `id-${k}`));
  assert.ok(Buffer.concat(stored.map((s) => s.raw)).toString().startsWith('{"path":"dir/file-0000000-"'));
});

test('at most TREE_STORE_AHEAD_BYTES of tree blobs wait to be stored: writing then waits for the oldest', async () => {
  const { stored, store } = deferredStore();
  const w = new TreeWriter(cdc(), store);
  let finished = false;
  const writing = writeListing(w, 8 * 1024 * 1024).then(() => (finished = true));
  for (let spins = 0; spins < 1000 && !finished; spins++) await new Promise((r) => setImmediate(r));
  assert.equal(finished, false, 'the writer waits once the window is full');
  const pending = stored.reduce((n, s) => n + s.raw.length, 0);
  assert.ok(pending > 4 * 1024 * 1024 && pending <= 4 * 1024 * 1024 + SMALL.maxSize, `bytes waiting: ${pending}`);
  // Everything stored as it comes: the writing finishes.
  let next = 0;
  while (!finished) {
    while (next < stored.length) stored[next]!.resolve(`id-${next++}`);
    await new Promise((r) => setImmediate(r));
  }
  await writing;
  const done = w.finish();
  for (let spins = 0; spins < 10; spins++) {
    while (next < stored.length) stored[next]!.resolve(`id-${next++}`);
    await new Promise((r) => setImmediate(r));
  }
  assert.equal((await done).length, stored.length);
});

test('a tree blob that fails to store fails the listing (finish), though later blobs were stored', async () => {
  const { stored, store } = deferredStore();
  const w = new TreeWriter(cdc(), store);
  await writeListing(w, 1536 * 1024);
  const done = w.finish();
  await new Promise((r) => setImmediate(r));
  stored[1]!.reject(new Error('disk full'));
  for (let k = 0; k < stored.length; k++) if (k !== 1) stored[k]!.resolve(`id-${k}`);
  await assert.rejects(done, /disk full/);
});
