// The SQLite record store: compare-and-swap semantics, no ABA, durability across reopen.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SqliteRecordStore } from '../src/store/sqlite.js';

const b = (s: string) => new TextEncoder().encode(s);
const text = (u: Uint8Array | undefined) => (u ? new TextDecoder().decode(u) : undefined);

describe('SqliteRecordStore', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-store-'));
  const path = join(dir, 'r.sqlite');
  const store = new SqliteRecordStore(path);
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates only when absent, updates only at the expected version', async () => {
    assert.equal(await store.get('a'), null);
    const v1 = await store.compareAndPut('a', b('one'), null);
    assert.ok(v1.ok);
    assert.deepEqual(await store.compareAndPut('a', b('again'), null), { ok: false });
    const v2 = await store.compareAndPut('a', b('two'), v1.version);
    assert.ok(v2.ok);
    assert.deepEqual(await store.compareAndPut('a', b('stale'), v1.version), { ok: false });
    const got = await store.get('a');
    assert.equal(text(got?.value), 'two');
    assert.equal(got?.version, v2.version);
  });

  it('deletes only at the expected version', async () => {
    const cur = (await store.get('a'))!;
    assert.equal(await store.compareAndDelete('a', String(Number(cur.version) - 1)), false);
    assert.equal(await store.compareAndDelete('a', cur.version), true);
    assert.equal(await store.get('a'), null);
  });

  it('never reuses a version after delete and re-create (no ABA)', async () => {
    const v1 = await store.compareAndPut('x', b('1'), null);
    assert.ok(v1.ok);
    assert.equal(await store.compareAndDelete('x', v1.version), true);
    const v2 = await store.compareAndPut('x', b('2'), null);
    assert.ok(v2.ok);
    assert.notEqual(v2.version, v1.version);
    assert.deepEqual(await store.compareAndPut('x', b('old writer'), v1.version), { ok: false });
  });

  it('lets exactly one of many concurrent writers at one version win, in one group commit', async () => {
    const base = await store.compareAndPut('race', b('0'), null);
    assert.ok(base.ok);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => store.compareAndPut('race', b(`w${i}`), base.version)));
    assert.equal(results.filter((r) => r.ok).length, 1);
    const others = await Promise.all(Array.from({ length: 20 }, (_, i) => store.compareAndPut(`acct-${i}`, b('v'), null)));
    assert.ok(others.every((r) => r.ok), 'independent accounts all commit');
  });

  it('rejects a malformed version without writing', async () => {
    assert.deepEqual(await store.compareAndPut('race', b('x'), 'not-a-number'), { ok: false });
    assert.equal(await store.compareAndDelete('race', 'NaN'), false);
  });

  it('keeps committed records across close and reopen', async () => {
    const v = await store.compareAndPut('durable', b('kept'), null);
    assert.ok(v.ok);
    const again = new SqliteRecordStore(path);
    assert.equal(text((await again.get('durable'))?.value), 'kept');
    await again.close();
  });
});
