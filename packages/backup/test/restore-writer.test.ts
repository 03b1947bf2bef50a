/**
 * Restore's writer threads (restore-writer.ts, issue 13): a restore of many small files
 * writes them on a thread, and the main thread writes some itself. Both must give what the
 * main thread alone gave: bytes, modes, times, owners, names that are not UTF-8, replaced
 * files, and on failure the file named and no temporary name left.
 *
 * Every restore in this file's process goes to the threads, whatever its size
 * (minFiles = 0), and the metadata and restore-safety suites run again below under that
 * setting, so each of their cases is checked on the threads' path too (the swapped-blob cases
 * of restore-safety reach the thread's own check of a blob against its ID).
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { CofferError, backup, restore } from '../src/index.js';
import { restoreStagingForTesting, restoreWriterForTesting, timeArgOf } from '../src/repository/restore.js';
import { BLOB_NOT_ITS_ID, CORRUPT_BLOB, RestoreWriter } from '../src/repository/restore-writer.js';
import { maybeCompressInto, zstdBound } from '../src/repository/compress.js';
import { BLOB_COMPRESSED } from '../src/repository/blob.js';
import { allPaths, assertSameTree, dir, file, newRepo, prng, tempDir, writeTree, type Spec } from './fixtures/trees.js';

const isRoot = process.getuid?.() === 0;
restoreWriterForTesting.minFiles = 0;

/** `dirs` directories of `per` small files each: modes, times (before 1970 too) and sizes vary, some empty. */
function manySmall(dirs: number, per: number): Spec {
  const top: Record<string, Spec> = {};
  const modes = [0o644, 0o600, 0o755, 0o400, 0o640, 0o444, 0o700];
  for (let d = 0; d < dirs; d++) {
    const children: Record<string, Spec> = {};
    for (let i = 0; i < per; i++) {
      const n = d * per + i;
      const size = n % 9 === 0 ? 0 : 50 + ((n * 977) % 5000);
      const mtime = n % 13 === 0 ? -86_400_000 * (n + 1) + 123 : 1_600_000_000_000 + n * 1_001;
      children[`f${i}.dat`] = file(prng(n, size), modes[n % modes.length], mtime);
    }
    top[`d${d}`] = dir(children, 0o755, 1_500_000_000_000 + d);
  }
  return dir(top);
}

/** A repository holding one backup of `spec`, written as a directory named `name`. */
async function backedUp(t: TestContext, name: string, spec: Spec) {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'rw-src'), name);
  await writeTree(src, spec);
  return { tr, src, r: await backup(tr.repo, { paths: [src] }) };
}

test('many small files restore through the writer thread exactly as on the main thread alone (bytes, modes, times)', async (t) => {
  const { tr, src, r } = await backedUp(t, 'tree', manySmall(24, 25));

  const threaded = await tempDir(t, 'rw-threads');
  const res = await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target: threaded });
  assert.equal(res.files, 600);
  assert.ok(restoreWriterForTesting.started >= 1, 'the writer thread was used');
  await assertSameTree(src, join(threaded, 'tree'));

  restoreWriterForTesting.minFiles = Number.MAX_SAFE_INTEGER;
  try {
    const alone = await tempDir(t, 'rw-main');
    await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target: alone });
    assert.equal(restoreWriterForTesting.started, 0, 'no thread when under the threshold');
    await assertSameTree(join(alone, 'tree'), join(threaded, 'tree'));
  } finally {
    restoreWriterForTesting.minFiles = 0;
  }
  assert.deepEqual((await allPaths(threaded)).filter((p) => p.includes('.coffer-restore-')), []);
});

test('owners as root and names that are not UTF-8 come back from the writer thread', { skip: !isRoot && 'needs root to chown' }, async (t) => {
  const tr = await newRepo(t);
  const src = await tempDir(t, 'rw-own');
  const latin1 = Buffer.concat([Buffer.from(join(src, 'caf')), Buffer.from([0xe9])]);
  for (let i = 0; i < 80; i++) await fs.writeFile(join(src, `o${i}`), `owned ${i}\n`);
  await fs.writeFile(latin1, 'latin-1 name\n');
  for (let i = 0; i < 80; i++) await fs.chown(join(src, `o${i}`), 1000 + (i % 3), 2000 + (i % 5));
  const r = await backup(tr.repo, { paths: [src] });
  const target = await tempDir(t, 'rw-own-dst');
  const res = await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target });
  assert.deepEqual(res.warnings, []);
  assert.ok(restoreWriterForTesting.started >= 1);
  const base = join(target, src.split('/').pop()!);
  for (let i = 0; i < 80; i++) {
    const st = await fs.lstat(join(base, `o${i}`));
    assert.deepEqual([st.uid, st.gid], [1000 + (i % 3), 2000 + (i % 5)], `o${i}`);
    assert.equal(await fs.readFile(join(base, `o${i}`), 'utf8'), `owned ${i}\n`);
  }
  const name = Buffer.concat([Buffer.from(join(base, 'caf')), Buffer.from([0xe9])]);
  assert.equal(await fs.readFile(name, 'utf8'), 'latin-1 name\n');
});

test('--overwrite through the writer thread replaces files; a directory in the way fails naming the file and leaves no temporary name', async (t) => {
  const { tr, src, r } = await backedUp(t, 'd', manySmall(3, 40));

  const target = await tempDir(t, 'rw-ow-dst');
  await fs.mkdir(join(target, 'd', 'd1'), { recursive: true });
  await fs.writeFile(join(target, 'd', 'd1', 'f5.dat'), 'the user\'s file\n');
  await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target, overwrite: true });
  await assertSameTree(src, join(target, 'd'));

  // A directory where d2/f7.dat goes: its rename fails (EISDIR); the rest of its batch is tried again, each for itself.
  const blocked = await tempDir(t, 'rw-ow-blocked');
  await fs.mkdir(join(blocked, 'd', 'd2', 'f7.dat', 'inside'), { recursive: true });
  await assert.rejects(restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target: blocked, overwrite: true }), (e: unknown) => {
    assert.ok(CofferError.is(e, 'storage'), String(e));
    assert.match((e as Error).message, /d2\/f7\.dat/);
    return true;
  });
  assert.deepEqual((await allPaths(blocked)).filter((p) => p.includes('.coffer-restore-')), [], 'no temporary name left');
  assert.deepEqual(await fs.readdir(join(blocked, 'd', 'd2', 'f7.dat')), ['inside'], 'what was in the way is untouched');
});

for (const staged of [true, false]) {
  test(`a full disk: the restore fails saying so, ${staged ? 'and leaves nothing of it (staged: a fresh target)' : 'every file in place is whole (file by file)'}, and no temporary name is left`, { skip: !isRoot && 'needs root to mount a small tmpfs' }, async (t) => {
    const { tr, src, r } = await backedUp(t, 'tree', manySmall(10, 60)); // 600 files, ~1.5 MB
    if (!staged) {
      restoreStagingForTesting.off = true;
      t.after(() => {
        restoreStagingForTesting.off = false;
      });
    }
    const { spawnSync } = await import('node:child_process');
    let mounted = '';
    // Registered before tempDir's clean-up, so it runs first (after hooks run in order).
    t.after(() => {
      if (mounted) spawnSync('umount', [mounted]);
    });
    const mnt = await tempDir(t, 'rw-full-mnt');
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=640k,nr_inodes=2000', 'tmpfs', mnt]);
    if (m.status !== 0) return t.skip(`cannot mount a tmpfs here: ${m.stderr.toString().trim()}`);
    mounted = mnt;
    await assert.rejects(restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target: mnt }), (e: unknown) => {
      assert.ok(CofferError.is(e, 'storage'), String(e));
      assert.match((e as Error).message, /no space left on device/);
      return true;
    });
    assert.ok(restoreWriterForTesting.started >= 1, 'the writer thread was used');
    const left = await allPaths(mnt);
    assert.deepEqual(left.filter((p) => p.includes('.coffer-restore-')), [], 'no temporary name left');
    // What is in place is whole: each file restored has the bytes it had.
    let whole = 0;
    for (const p of left) {
      const st = await fs.lstat(join(mnt, p));
      if (!st.isFile()) continue;
      assert.ok((await fs.readFile(join(mnt, p))).equals(await fs.readFile(join(src, p.slice('tree/'.length)))), p);
      whole++;
    }
    assert.equal(restoreStagingForTesting.staged, staged);
    if (staged) assert.deepEqual(left, [], 'the staging directory was removed');
    else assert.ok(whole > 0 && whole < 600, `${whole} files were in place when the disk filled`);
  });
}

// The other restore suites again, every restore on the threads' path.
test('a thread\'s answers are taken while the main thread is busy: it gets the next batch without the main thread yielding', async (t) => {
  const dst = await tempDir(t, 'rw-poll');
  const w = new RestoreWriter(1);
  t.after(() => w.close());
  const written: Array<Promise<unknown>> = [];
  const batchOf = (k: number) => {
    for (let i = 0; i < 64; i++) {
      const name = `b${k}-f${i}`;
      written.push(w.write({ tmp: Buffer.from(join(dst, `.${name}.tmp`)), dest: Buffer.from(join(dst, name)), data: Buffer.from(name), mode: 0o644, time: '1700000000', overwrite: false }));
    }
  };
  // The thread starts (asynchronously) with the first batch: let it come up.
  batchOf(0);
  await Promise.all(written);
  // Two whole batches: the thread's two slots. From here on this test never yields.
  batchOf(1);
  batchOf(2);
  batchOf(3); // a third whole batch waits: every slot taken
  const deadline = Date.now() + 20_000;
  while (w.backlogged && Date.now() < deadline) {
    // busy, as the main thread is while it decrypts and checks blobs
  }
  assert.equal(w.backlogged, false, 'the answers of the first two batches were taken and the third batch sent, all without yielding');
  await Promise.all(written);
  assert.equal((await fs.readdir(dst)).length, 4 * 64);
});

test('send: each file\'s done is called from poll() while the main thread never yields, so a count of files in flight kept from it falls at once', async (t) => {
  const dst = await tempDir(t, 'rw-send');
  const w = new RestoreWriter(1);
  t.after(() => w.close());
  const file = (name: string) => ({ tmp: Buffer.from(join(dst, `.${name}.tmp`)), dest: Buffer.from(join(dst, name)), data: Buffer.from(name), mode: 0o644, time: '1700000000', overwrite: false });
  // The thread starts (asynchronously) with the first file: let it come up.
  await w.write(file('first'));
  let inFlight = 0;
  const failures: unknown[] = [];
  for (let i = 0; i < 64; i++) {
    inFlight++;
    w.send(file(`f${i}`), (r, err) => {
      if (err || !r) failures.push(err);
      inFlight--;
    });
  }
  assert.equal(inFlight, 64, 'done is never called from within send');
  // From here on this test never yields: only poll() can take the thread's answer.
  const deadline = Date.now() + 20_000;
  while (inFlight > 0 && Date.now() < deadline) w.poll();
  assert.equal(inFlight, 0, 'every file was answered through poll(), without yielding');
  assert.deepEqual(failures, []);
  assert.equal((await fs.readdir(dst)).length, 65);
});

test('a file sent as its stored blob is checked on the thread: written when it is what its ID says, refused (CORRUPT_BLOB, nothing created) when not', async (t) => {
  const dst = await tempDir(t, 'rw-blob');
  const key = Buffer.alloc(32, 7);
  const w = new RestoreWriter(1, { fn: 'hmac-sha256', key });
  t.after(() => w.close());
  const idOf = (raw: Buffer) => createHmac('sha256', key).update(raw).digest();
  const raw = Buffer.from('a small file that compresses well. '.repeat(40));
  const into = maybeCompressInto(raw, 'max', Buffer.alloc(zstdBound(raw.length)));
  const { stored, flags } = { stored: Buffer.from(into.stored), flags: into.flags };
  assert.equal(flags, BLOB_COMPRESSED);
  const other = prng(9, 3000);
  const send = (name: string, data: Buffer, blob: { flags: number; rawLength: number; id: Buffer }) =>
    w.write({ tmp: Buffer.from(join(dst, `.${name}.tmp`)), dest: Buffer.from(join(dst, name)), data, blob, mode: 0o640, time: '1700000000', overwrite: false });
  const corrupt = (e: unknown, message: RegExp) => (e as NodeJS.ErrnoException).code === CORRUPT_BLOB && message.test((e as Error).message);
  const outcomes = await Promise.allSettled([
    send('good', stored, { flags, rawLength: raw.length, id: idOf(raw) }),
    send('raw-stored', other, { flags: 0, rawLength: other.length, id: idOf(other) }),
    // The index's ID for another blob: the bytes are authentic but not what it names.
    send('swapped', stored, { flags, rawLength: raw.length, id: idOf(other) }),
    send('bad-frame', Buffer.concat([stored.subarray(0, 20), Buffer.alloc(30)]), { flags, rawLength: raw.length, id: idOf(raw) }),
    send('long', stored, { flags, rawLength: raw.length - 1, id: idOf(raw) }),
    send('after', other, { flags: 0, rawLength: other.length, id: idOf(other) }),
  ]);
  assert.deepEqual(
    outcomes.map((o) => o.status),
    ['fulfilled', 'fulfilled', 'rejected', 'rejected', 'rejected', 'fulfilled'],
  );
  assert.ok(corrupt((outcomes[2] as PromiseRejectedResult).reason, new RegExp(`^${BLOB_NOT_ITS_ID}$`)));
  assert.ok(corrupt((outcomes[3] as PromiseRejectedResult).reason, /zstd frame|does not decompress/));
  assert.ok(corrupt((outcomes[4] as PromiseRejectedResult).reason, /does not decompress|wrong length/));
  assert.deepEqual(await fs.readFile(join(dst, 'good')), raw);
  assert.equal((await fs.stat(join(dst, 'good'))).mode & 0o7777, 0o640);
  assert.deepEqual(await fs.readFile(join(dst, 'raw-stored')), other);
  assert.deepEqual(await fs.readFile(join(dst, 'after')), other);
  assert.deepEqual((await fs.readdir(dst)).sort(), ['after', 'good', 'raw-stored'], 'nothing of a refused blob was created, not even its temporary name');
});

await import('./metadata.test.js');
await import('./restore-safety.test.js');

test('a file time made from the file table (seconds and nanoseconds, no bigint) is the string utimes was given from the nanoseconds', () => {
  // The reference: the stored nanoseconds truncated toward zero to microseconds, then half a microsecond past it.
  const fromNs = (ns: bigint) => {
    const us = ns / 1000n;
    const a = us < 0n ? -us : us;
    return `${us < 0n ? '-' : ''}${a / 1_000_000n}.${String(a % 1_000_000n).padStart(6, '0')}5`;
  };
  const NS = 1_000_000_000n;
  const times = [0n, 1n, 999n, 1000n, -1n, -999n, -1000n, -1001n, -500n, 1_700_000_000_123_456_789n, -86_400_000_000_000_001n, 999_999_999n, -999_999_999n, 4_102_444_800_999_999_999n, -NS, NS];
  for (let i = 0, x = 12345n; i < 200; i++) {
    x = (x * 6364136223846793005n + 1442695040888963407n) % 2n ** 64n;
    times.push((x % 2n ** 63n) - 2n ** 62n); // ±146 years around 1970, in nanoseconds
  }
  for (const ns of times) {
    // As FileTable keeps it: whole seconds toward zero, and the nanoseconds left (same sign).
    assert.equal(timeArgOf(Number(ns / NS), Number(ns % NS)), fromNs(ns), String(ns));
  }
});

test('a snapshot of many files starts its writer thread before the listing; one whose files turn out not to be whole small files closes it unused', async (t) => {
  restoreWriterForTesting.minFiles = 100;
  t.after(() => {
    restoreWriterForTesting.minFiles = 0;
  });
  const { tr, src, r } = await backedUp(t, 'tree', manySmall(6, 25));
  const out = await tempDir(t, 'rw-early');
  await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target: out });
  assert.equal(restoreWriterForTesting.startedBeforeListing, 1, 'the thread was started before the listing');
  assert.equal(restoreWriterForTesting.started, 1, 'and used');
  await assertSameTree(src, join(out, 'tree'));

  // Three files of several chunks each (none goes to a writer thread): the early thread is
  // closed unused (were it left running, this test process would not end).
  restoreWriterForTesting.minFiles = 2;
  const { tr: tr2, src: src2, r: r2 } = await backedUp(t, 'big', dir({ a: file(prng(7, 3 << 20)), b: file(prng(8, 3 << 20)), c: file(prng(9, 3 << 20)) }));
  const out2 = await tempDir(t, 'rw-early2');
  await restore(tr2.repo, { id: r2.id, snapshot: r2.snapshot }, { target: out2 });
  assert.equal(restoreWriterForTesting.startedBeforeListing, 1);
  assert.equal(restoreWriterForTesting.started, 0, 'no writer used for files of several chunks');
  await assertSameTree(src2, join(out2, 'big'));
});
