// The SQLite store's log-entry commit (commitBatch): every put of one entry gets its own
// revision (one bump per entry, consecutive values), newer than any before, as the
// version the store then reports; a delete in the same entry takes none.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SqliteRecordStore } from '../src/store/sqlite.js';

const b = (s: string) => new TextEncoder().encode(s);

describe('SqliteRecordStore commitBatch', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-store-batch-'));
  const store = new SqliteRecordStore(join(dir, 'r.sqlite'));
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives each put of an entry a distinct revision above every earlier one, the one get() then reports', async () => {
    const before = await store.compareAndPut('old', b('x'), null);
    assert.ok(before.ok);
    await store.compareAndPut('gone', b('y'), null);
    const entry = new Uint8Array(8);
    const versions = await store.commitBatch([
      { account: 'a', value: b('1'), erasure: false },
      { account: 'gone', value: null, erasure: true },
      { account: 'b', value: b('2'), erasure: false },
      { account: 'c', value: b('3'), erasure: false },
    ], 1, entry);
    assert.deepEqual([...versions.keys()], ['a', 'b', 'c']);
    const revs = [...versions.values()].map(Number);
    assert.deepEqual(revs, [revs[0]!, revs[0]! + 1, revs[0]! + 2]);
    assert.ok(revs[0]! > Number(before.version));
    for (const [account, version] of versions) assert.equal((await store.get(account))?.version, version);
    assert.equal(await store.get('gone'), null);
    // The next entry's puts, and a plain put after it, keep climbing.
    const next = await store.commitBatch([{ account: 'a', value: b('4'), erasure: false }], 2, entry);
    assert.equal(Number(next.get('a')), revs[2]! + 1);
    const plain = await store.compareAndPut('d', b('5'), null);
    assert.ok(plain.ok && Number(plain.version) === revs[2]! + 2);
  });

  it('an entry of deletes only bumps nothing', async () => {
    const put = await store.compareAndPut('e', b('6'), null);
    assert.ok(put.ok);
    const none = await store.commitBatch([{ account: 'e', value: null, erasure: true }], 3, new Uint8Array(8));
    assert.equal(none.size, 0);
    const after = await store.compareAndPut('f', b('7'), null);
    assert.ok(after.ok && Number(after.version) === Number(put.version) + 1);
  });
});
