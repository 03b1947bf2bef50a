// The SQLite record store: compare-and-swap semantics, no ABA, durability across reopen,
// and no write resolving before the fsync of the WAL that holds it.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, fstatSync, fsync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteRecordStore } from '../src/store/sqlite.js';
import { StoreError } from '../src/store/store.js';

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

    // One group commit: a store whose fsyncs are counted sees 70 concurrent writes
    // (the race and the independent accounts together) made durable by ONE fsync.
    let fsyncs = 0;
    const counted = new SqliteRecordStore(join(dir, 'group.sqlite'), { fsync: (fd, done) => (fsyncs++, fsync(fd, done)) });
    try {
      const seed = await counted.compareAndPut('race', b('0'), null);
      assert.ok(seed.ok);
      fsyncs = 0;
      const all = await Promise.all([
        ...Array.from({ length: 50 }, (_, i) => counted.compareAndPut('race', b(`w${i}`), seed.version)),
        ...Array.from({ length: 20 }, (_, i) => counted.compareAndPut(`acct-${i}`, b('v'), null)),
      ]);
      assert.equal(all.filter((r) => r.ok).length, 1 + 20);
      assert.equal(fsyncs, 1, 'all 70 writes were committed together and covered by one fsync');
    } finally {
      await counted.close();
    }
  });

  it('rejects a malformed version without writing', async () => {
    assert.deepEqual(await store.compareAndPut('race', b('x'), 'not-a-number'), { ok: false });
    assert.equal(await store.compareAndDelete('race', 'NaN'), false);
  });

  it('keeps its files (database, -wal, -shm) readable by its own user only, also those an earlier version made with the umask', async () => {
    const own = join(dir, 'modes.sqlite');
    const modes = () => ['', '-wal', '-shm'].map((x) => statSync(`${own}${x}`).mode & 0o777);
    const s1 = new SqliteRecordStore(own);
    await s1.compareAndPut('a', b('x'), null);
    assert.deepEqual(modes(), [0o600, 0o600, 0o600]);
    await s1.close();
    for (const x of ['', '-wal', '-shm']) if (existsSync(`${own}${x}`)) chmodSync(`${own}${x}`, 0o644);
    const s2 = new SqliteRecordStore(own);
    await s2.compareAndPut('b', b('y'), null);
    assert.deepEqual(modes(), [0o600, 0o600, 0o600]);
    await s2.close();
  });

  it('keeps committed records across close and reopen', async () => {
    const own = join(dir, 'reopen.sqlite');
    const first = new SqliteRecordStore(own);
    const v = await first.compareAndPut('durable', b('kept'), null);
    assert.ok(v.ok);
    await first.close();
    await assert.rejects(first.get('durable'), StoreError, 'the first store is closed');
    const again = new SqliteRecordStore(own);
    try {
      const got = await again.get('durable');
      assert.equal(text(got?.value), 'kept');
      assert.equal(got?.version, v.version, 'same version after reopen');
      // Versions keep growing after a reopen (no reuse).
      const next = await again.compareAndPut('other', b('x'), null);
      assert.ok(next.ok && Number(next.version) > Number(v.version));
    } finally {
      await again.close();
    }
  });
});

/** An fsync the test releases by hand; it records the descriptor it was given. */
function heldFsync() {
  const pending: { fd: number; done: (err: NodeJS.ErrnoException | null) => void }[] = [];
  return {
    pending,
    fsync: (fd: number, done: (err: NodeJS.ErrnoException | null) => void) => void pending.push({ fd, done }),
    /** Runs the real fsync for everything held (or fails it with `err`). */
    release(err?: NodeJS.ErrnoException) {
      for (const p of pending.splice(0)) {
        if (err) p.done(err);
        else fsync(p.fd, p.done);
      }
    },
  };
}

/** Lets every queued callback and a few loop turns run (no timing involved). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

describe('SqliteRecordStore durability: a write resolves only after its WAL fsync', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-store-sync-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('holds the answer while the fsync is held, and fsyncs the -wal file itself (also after a checkpoint restarts the WAL)', async () => {
    const path = join(dir, 'held.sqlite');
    const held = heldFsync();
    const store = new SqliteRecordStore(path, { fsync: held.fsync });
    try {
      let state = 'pending';
      const write = store.compareAndPut('a', b('1'), null).then((r) => ((state = 'resolved'), r), (e: unknown) => ((state = 'rejected'), Promise.reject(e)));
      await settle();
      assert.equal(held.pending.length, 1, 'an fsync was started after the commit');
      assert.equal(state, 'pending', 'the write did not resolve before its fsync finished');
      assert.equal(fstatSync(held.pending[0]!.fd).ino, statSync(`${path}-wal`).ino, 'the fsynced descriptor is the WAL file');
      // A commit made while that fsync runs waits for the next one, not this one.
      let second = 'pending';
      const write2 = store.compareAndPut('b', b('2'), null).then(() => (second = 'resolved'));
      await settle();
      assert.equal(held.pending.length, 1, 'one fsync at a time');
      held.release();
      assert.ok((await write).ok);
      await settle();
      assert.equal(second, 'pending', 'a commit made during an fsync is not covered by it');
      assert.equal(held.pending.length, 1);
      held.release();
      await write2;

      // Force checkpoints that restart the WAL from its beginning (another connection,
      // as another process would): the descriptor still names the live -wal file.
      const other = new Database(path);
      try {
        for (let i = 0; i < 3; i++) {
          other.pragma('wal_checkpoint(RESTART)');
          const w = store.compareAndPut(`c${i}`, b('3'), null);
          await settle();
          assert.equal(held.pending.length, 1);
          assert.equal(fstatSync(held.pending[0]!.fd).ino, statSync(`${path}-wal`).ino);
          held.release();
          assert.ok((await w).ok);
        }
      } finally {
        other.close();
      }
    } finally {
      const closing = store.close();
      held.release();
      await closing;
    }
  });

  it('a failed fsync rejects the write (never resolves it), and the store refuses everything after', async () => {
    const path = join(dir, 'failing.sqlite');
    const held = heldFsync();
    const store = new SqliteRecordStore(path, { fsync: held.fsync });
    try {
      const write = store.compareAndPut('a', b('1'), null);
      await settle();
      const eio = Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }) as NodeJS.ErrnoException;
      held.release(eio);
      await assert.rejects(write, (e: unknown) => e instanceof StoreError && /fsync/.test(e.message));
      await assert.rejects(store.get('a'), StoreError);
      await assert.rejects(store.compareAndPut('b', b('2'), null), StoreError);
    } finally {
      await store.close();
    }
  });
});
