/**
 * Storage faults (TESTING.md, "Sealed objects and repositories"): a real LocalBackend,
 * damaged on disk or wrapped in a fault-injecting backend. Each fault must give its own
 * error (missing-object, corrupt, storage, wrong-key, unsupported-version), `check` must
 * name the snapshots affected, and a failed restore must leave no file where the user's
 * file should be.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import {
  BackupKey,
  CofferError,
  LocalBackend,
  Repository,
  backup,
  check,
  forgetSnapshots,
  hex,
  prune,
  LOCK_EXPIRY_MS,
  restore,
  type ByteRange,
  type CheckResult,
  type ObjectInfo,
  type ObjectWriter,
  type StorageBackend,
} from '../src/index.js';
import { BlobType, snapshotName } from '../src/repository/blob.js';
import { BlobWriter } from '../src/repository/blob-writer.js';
import { ObjectKind } from '../src/crypto/sealed-object.js';
import { encodeSnapshot } from '../src/repository/snapshot.js';
import { allPaths, assertSameTree, dir, file, newRepo, prng, tempDir, writeTree, type TestRepo } from './fixtures/trees.js';

/** Wraps a real backend; each hook may throw (a fault) or return replacement bytes. */
class FaultyBackend implements StorageBackend {
  readonly calls: string[] = [];
  puts = 0;
  onGet?: (name: string, range: ByteRange | undefined, bytes: () => Promise<Uint8Array>) => Promise<Uint8Array> | undefined;
  onPut?: (name: string, n: number) => void;
  constructor(readonly inner: StorageBackend) {}
  get location(): string {
    return this.inner.location;
  }
  async put(name: string, parts: readonly Uint8Array[]): Promise<void> {
    this.calls.push(`put ${name}`);
    this.onPut?.(name, this.puts++);
    return this.inner.put(name, parts);
  }
  /** Streamed objects (packs) count as puts: a fault hook fires when one starts. */
  async create(name: string): Promise<ObjectWriter> {
    this.calls.push(`put ${name}`);
    this.onPut?.(name, this.puts++);
    return this.inner.create(name);
  }
  async get(name: string, range?: ByteRange): Promise<Uint8Array> {
    this.calls.push(`get ${name}`);
    const replaced = this.onGet?.(name, range, () => this.inner.get(name, range));
    return replaced ? await replaced : this.inner.get(name, range);
  }
  stat(name: string): Promise<ObjectInfo | null> {
    this.calls.push(`stat ${name}`);
    return this.inner.stat(name);
  }
  list(prefix: string): Promise<ObjectInfo[]> {
    this.calls.push(`list ${prefix}`);
    return this.inner.list(prefix);
  }
  delete(name: string): Promise<void> {
    this.calls.push(`delete ${name}`);
    return this.inner.delete(name);
  }
  sync(): Promise<void> {
    return this.inner.sync();
  }
}

const storageError = (what: string, why: string) => new CofferError('storage', `${what} failed: ${why}`);

interface Fixture extends TestRepo {
  src: string;
  /** S1 backs up d/ with A.bin; S2 adds B.bin (A deduplicated into S1's pack). */
  s1: string;
  s2: string;
  /** S1's pack: A's data and S1's tree. S2's pack: B's data and S2's tree. */
  p1: string;
  p2: string;
}

async function packs(root: string): Promise<string[]> {
  return (await new LocalBackend(root).list('data/')).map((o) => o.name);
}

async function twoSnapshots(t: TestContext): Promise<Fixture> {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, dir({ 'A.bin': file(prng(1, 120_000)) }));
  const s1 = hex((await backup(tr.repo, { paths: [src], now: () => new Date(1_700_000_000_000) })).id);
  const [p1] = await packs(tr.dir);
  await writeTree(join(src, 'B.bin'), file(prng(2, 60_000)));
  const s2 = hex((await backup(tr.repo, { paths: [src], now: () => new Date(1_700_000_100_000) })).id);
  const p2 = (await packs(tr.dir)).find((n) => n !== p1);
  assert.ok(p1 && p2);
  return { ...tr, src, s1, s2, p1, p2 };
}

/** Every snapshot ID that some problem names. */
function affected(r: CheckResult): string[] {
  return [...new Set(r.problems.flatMap((p) => p.snapshots))].sort();
}

/** Restores `id` into a fresh target and expects `code`; returns the target. */
async function restoreFails(t: TestContext, repo: Repository, id: string, code: CofferError['code'], message?: RegExp): Promise<string> {
  const target = await tempDir(t, 'dst');
  await assert.rejects(restore(repo, await repo.findSnapshot(id), { target }), (e: unknown) => {
    assert.ok(CofferError.is(e, code), `expected '${code}', got ${String(e)}`);
    if (message) assert.match(e.message, message);
    return true;
  });
  const left = await allPaths(target);
  assert.deepEqual(left.filter((p) => p.includes('.coffer-restore-')), [], 'no temporary files left');
  assert.ok(!left.includes('d/A.bin'), 'no file where the damaged file should be');
  return target;
}

const path = (root: string, name: string) => join(root, ...name.split('/'));

test('a missing pack: restore fails with missing-object, check names every affected snapshot', async (t) => {
  const f = await twoSnapshots(t);
  await fs.unlink(path(f.dir, f.p1));
  const repo = await f.reopen();
  await restoreFails(t, repo, f.s2, 'missing-object', new RegExp(f.p1.slice(-64)));
  await restoreFails(t, repo, f.s1, 'missing-object');
  const r = await check(repo);
  assert.deepEqual(affected(r), [f.s1, f.s2].sort());
  assert.ok(r.problems.some((p) => p.message.includes(f.p1) && /missing/.test(p.message)));
  // The intact snapshot's other file is not what failed: S2 minus A would restore.
});

test(
  'a missing pack: the restore error names the file whose data is gone',
  async (t) => {
    const f = await twoSnapshots(t);
    await fs.unlink(path(f.dir, f.p1));
    await restoreFails(t, await f.reopen(), f.s2, 'missing-object', /A\.bin/);
  },
);

test('a file whose blob no index lists: restore refuses before writing anything, naming the file', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, dir({ 'A.bin': file(prng(1, 120_000)) }));
  await backup(tr.repo, { paths: [src], now: () => new Date(1_700_000_000_000) });
  const first = (await new LocalBackend(tr.dir).list('index/')).map((o) => o.name);
  await writeTree(join(src, 'B.bin'), file(prng(2, 60_000)));
  const s2 = hex((await backup(tr.repo, { paths: [src], now: () => new Date(1_700_000_100_000) })).id);
  // The second snapshot's listing and B's data are in the second index; A's only in the first.
  for (const name of first) await fs.unlink(path(tr.dir, name));
  const target = await restoreFails(t, await tr.reopen(), s2, 'missing-object', /d\/A\.bin: its data \(blob [0-9a-f]{16}\) is missing/);
  assert.deepEqual(await allPaths(target), [], 'nothing was written, not even the other file');
});

test('a file whose chunks do not add up to its size (a listing written wrong): check reports it, as restore does', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, dir({ 'A.bin': file(prng(1, 120_000)) }));
  const rec = await tr.repo.findSnapshot(hex((await backup(tr.repo, { paths: [src] })).id));
  // The same listing with A's size one byte larger, stored as a new tree and snapshot.
  const parts: Buffer[] = [];
  for (const id of rec.snapshot.tree) parts.push(await tr.repo.readBlob(Buffer.from(id, 'hex')));
  const listing = Buffer.from(Buffer.concat(parts).toString().replace('"size":120000,', '"size":120001,'));
  assert.match(listing.toString(), /"size":120001,/);
  const treeId = tr.repo.keys.chunkId(listing);
  const w = new BlobWriter(tr.repo, () => false);
  await w.add(BlobType.Tree, treeId, listing);
  await w.finish();
  const bad = await tr.repo.writeObject(ObjectKind.Snapshot, encodeSnapshot({ ...rec.snapshot, tree: [hex(treeId)] }), snapshotName);
  const repo = await tr.reopen();
  await restoreFails(t, repo, hex(bad), 'corrupt', /does not add up to its size/);
  const r = await check(repo);
  assert.deepEqual(affected(r), [hex(bad)]);
  assert.ok(r.problems.some((p) => /d\/A\.bin: its chunks add up to 120000 bytes, not its size 120001/.test(p.message)), JSON.stringify(r.problems));
});

for (const [what, damage] of [
  ['truncated by one byte', (b: Buffer) => b.subarray(0, b.length - 1)],
  ['truncated to its header', (b: Buffer) => b.subarray(0, 40)],
  ['truncated at a segment boundary', (b: Buffer) => b.subarray(0, 65_536)],
  ['extended by one byte', (b: Buffer) => Buffer.concat([b, Buffer.from([0])])],
  ['extended by a segment of garbage', (b: Buffer) => Buffer.concat([b, prng(5, 65_552)])],
  ['a header byte flipped', (b: Buffer) => flip(b, 10)],
  ['a middle byte flipped', (b: Buffer) => flip(b, b.length >> 1)],
  ['the last byte flipped', (b: Buffer) => flip(b, b.length - 1)],
] as const) {
  test(`a pack ${what}: check --read-data names the affected snapshots, restore fails 'corrupt' and leaves no file`, async (t) => {
    const f = await twoSnapshots(t);
    const p = path(f.dir, f.p1);
    await fs.writeFile(p, damage(await fs.readFile(p)));
    const repo = await f.reopen();
    const r = await check(repo, { readData: true });
    assert.ok(r.problems.length > 0);
    assert.ok(affected(r).includes(f.s2), `S2 affected: ${JSON.stringify(r.problems)}`);
    assert.ok(r.problems.some((pr) => pr.message.includes(f.p1)), 'the pack is named');
    await restoreFails(t, repo, f.s2, 'corrupt');
  });
}

function flip(b: Buffer, at: number): Buffer {
  const c = Buffer.from(b);
  c[at]! ^= 0x01;
  return c;
}

test('a pack truncated once, then read whole: the restore reads the blobs it needs from it again one by one, restores, and warns', async (t) => {
  const f = await twoSnapshots(t);
  const fb = new FaultyBackend(new LocalBackend(f.dir));
  let once = true;
  fb.onGet = (name, range, bytes) => {
    // Restore streams packs with ranged reads; check reads them whole: either way
    // the first read of P1 comes back short.
    if (name !== f.p1 || !once) return undefined;
    once = false;
    return bytes().then((b) => b.subarray(0, b.length - 100));
  };
  const repo = await f.reopen(fb);
  const target = await tempDir(t, 'dst');
  const r = await restore(repo, await repo.findSnapshot(f.s2), { target });
  assert.equal(once, false);
  assert.ok(r.warnings.some((w) => w.path === f.p1 && /failed authentication when read whole/.test(w.message)), JSON.stringify(r.warnings));
  await assertSameTree(f.src, join(target, 'd'));
});

test('a pack copied under another pack\'s name, and two packs swapped: detected', async (t) => {
  const f = await twoSnapshots(t);
  const b1 = await fs.readFile(path(f.dir, f.p1));
  const b2 = await fs.readFile(path(f.dir, f.p2));
  // P2's bytes under P1's name.
  await fs.writeFile(path(f.dir, f.p1), b2);
  let repo = await f.reopen();
  let r = await check(repo, { readData: true });
  assert.ok(affected(r).includes(f.s2));
  await restoreFails(t, repo, f.s2, 'corrupt');
  // Swapped.
  await fs.writeFile(path(f.dir, f.p2), b1);
  repo = await f.reopen();
  r = await check(repo, { readData: true });
  assert.deepEqual(affected(r), [f.s1, f.s2].sort());
  await restoreFails(t, repo, f.s2, 'corrupt');
  await restoreFails(t, repo, f.s1, 'corrupt');
});

test('a pack duplicated under a new name is an unreferenced pack: check passes, prune keeps it while young and removes it once older than the lock expiry', async (t) => {
  const f = await twoSnapshots(t);
  const dup = `data/ab/${'ab'.repeat(32)}`;
  await fs.mkdir(path(f.dir, 'data/ab'), { recursive: true });
  await fs.copyFile(path(f.dir, f.p1), path(f.dir, dup));
  const repo = await f.reopen();
  const r = await check(repo, { readData: true });
  assert.deepEqual(r.problems, []);
  assert.equal(r.unreferencedPacks, 1);
  // Young: it could be a running backup's pack.
  assert.equal((await prune(repo)).youngPacksKept, 1);
  assert.ok((await packs(f.dir)).includes(dup));
  // Old, and every blob in it is indexed elsewhere: a duplicate, deleted.
  await prune(repo, { now: () => Date.now() + LOCK_EXPIRY_MS + 1000 });
  assert.ok(!(await packs(f.dir)).includes(dup));
});

test('snapshot A\'s manifest under snapshot B\'s name is refused: skipped with a warning when listing, an error when asked for', async (t) => {
  const f = await twoSnapshots(t);
  await fs.copyFile(path(f.dir, `snapshots/${f.s1}`), path(f.dir, `snapshots/${f.s2}`));
  const repo = await f.reopen();
  const warnings: string[] = [];
  repo.onWarning = (m) => warnings.push(m);
  assert.deepEqual((await repo.snapshots()).map((s) => hex(s.id)), [f.s1]);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, new RegExp(`skipping snapshot ${f.s2.slice(0, 8)}: .*(different object|failed authentication)`));
  await assert.rejects(repo.findSnapshot(f.s2), (e: unknown) => CofferError.is(e, 'corrupt') && e.message.includes(f.s2));
  const r = await check(repo);
  assert.deepEqual(affected(r), [f.s2]);
  // Index and lock objects are sealed the same way: an index under a snapshot's name fails too.
  const [idx] = await fs.readdir(path(f.dir, 'index'));
  await fs.copyFile(path(f.dir, `index/${idx}`), path(f.dir, `snapshots/${f.s2}`));
  await assert.rejects((await f.reopen()).findSnapshot(f.s2), (e: unknown) => CofferError.is(e, 'corrupt'));
  // And prune refuses: it can't know what an unreadable snapshot needs.
  await assert.rejects(prune(await f.reopen()), (e: unknown) => CofferError.is(e, 'needs-repair') && /forget/.test(e.message));
});

test(
  'a damaged manifest does not stop restoring another snapshot by its ID',
  async (t) => {
    const f = await twoSnapshots(t);
    await fs.copyFile(path(f.dir, `snapshots/${f.s2}`), path(f.dir, `snapshots/${f.s1}`));
    const repo = await f.reopen();
    const target = await tempDir(t, 'dst');
    await restore(repo, await repo.findSnapshot(f.s2), { target });
    await assertSameTree(f.src, join(target, 'd'));
    await assert.rejects(repo.findSnapshot(f.s1), (e: unknown) => CofferError.is(e, 'corrupt'));
  },
);

test('an older manifest put back is accepted: it is authentic (spec: deletion is not detected)', async (t) => {
  const f = await twoSnapshots(t);
  const old = await fs.readFile(path(f.dir, `snapshots/${f.s1}`));
  const repo = await f.reopen();
  await forgetSnapshots(repo, [await repo.findSnapshot(f.s1)]);
  assert.deepEqual((await repo.snapshots()).map((s) => hex(s.id)), [f.s2]);
  // Put back before a prune: it lists and restores as before.
  await fs.writeFile(path(f.dir, `snapshots/${f.s1}`), old);
  assert.deepEqual((await repo.snapshots()).map((s) => hex(s.id)), [f.s1, f.s2]);
  const target = await tempDir(t, 'dst');
  await restore(repo, await repo.findSnapshot(f.s1), { target });
  assert.ok((await fs.readFile(join(target, 'd', 'A.bin'))).equals(prng(1, 120_000)));

  // Put back after a prune removed its tree: still accepted as a snapshot, but check
  // reports what it lacks and restore says 'missing-object' (never 'corrupt').
  await forgetSnapshots(repo, [await repo.findSnapshot(f.s1)]);
  await prune(repo);
  await fs.writeFile(path(f.dir, `snapshots/${f.s1}`), old);
  const fresh = await f.reopen();
  assert.deepEqual((await fresh.snapshots()).map((s) => hex(s.id)), [f.s1, f.s2]);
  const r = await check(fresh);
  assert.deepEqual(affected(r), [f.s1]);
  await restoreFails(t, fresh, f.s1, 'missing-object');
});

test('read errors (EIO) are storage errors, not corrupt: restore and check say I/O error', async (t) => {
  const f = await twoSnapshots(t);
  const fb = new FaultyBackend(new LocalBackend(f.dir));
  fb.onGet = (name) => {
    if (name.startsWith('data/') && name === f.p1) throw storageError(`reading ${name}`, 'I/O error');
    return undefined;
  };
  const repo = await f.reopen(fb);
  await restoreFails(t, repo, f.s2, 'storage', /I\/O error/);
  const r = await check(repo, { readData: true });
  assert.ok(r.problems.length > 0);
  for (const p of r.problems) {
    assert.match(p.message, /I\/O error/);
    assert.doesNotMatch(p.message, /corrupt|authentication/);
  }
  // An I/O error reading the index or a manifest: also 'storage'.
  fb.onGet = (name) => {
    if (name.startsWith('snapshots/')) throw storageError(`reading ${name}`, 'I/O error');
    return undefined;
  };
  await assert.rejects((await f.reopen(fb)).snapshots(), (e: unknown) => CofferError.is(e, 'storage'));
});

test('a real read error from the local backend (a pack that is a directory) is a storage error', async (t) => {
  const f = await twoSnapshots(t);
  const p = path(f.dir, f.p1);
  await fs.unlink(p);
  await fs.mkdir(p);
  await restoreFails(t, await f.reopen(), f.s2, 'storage');
});

test('disk full on any put during a backup: a clean storage error, earlier snapshots intact, the next backup succeeds', async (t) => {
  const f = await twoSnapshots(t);
  await writeTree(join(f.src, 'C.bin'), file(prng(3, 200_000)));
  let failed = 0;
  for (let k = 0; ; k++) {
    const fb = new FaultyBackend(new LocalBackend(f.dir));
    fb.onPut = (name, n) => {
      if (n === k) throw storageError(`writing ${name} to ${f.dir}`, 'no space left on device');
    };
    const repo = await f.reopen(fb);
    try {
      await backup(repo, { paths: [f.src] });
      break; // k is past the last put: the backup went through
    } catch (e) {
      assert.ok(CofferError.is(e, 'storage'), `put #${k}: ${String(e)}`);
      assert.match(e.message, /no space left on device/);
      failed++;
    }
    const clean = await f.reopen();
    assert.deepEqual((await clean.snapshots()).map((s) => hex(s.id)), [f.s1, f.s2], `put #${k} failed: no new snapshot`);
    assert.deepEqual((await check(clean)).problems, [], `check after put #${k} failed`);
    assert.deepEqual(await fs.readdir(path(f.dir, 'locks')).catch(() => []), [], 'the lock was released');
    assert.ok(k < 20, 'the backup makes a handful of puts');
  }
  assert.ok(failed >= 4, `lock, pack, index and snapshot puts each failed once (${failed})`);
  const repo = await f.reopen();
  assert.equal((await repo.snapshots()).length, 3);
  assert.deepEqual((await check(repo, { readData: true })).problems, []);
  for (const id of [f.s2]) {
    const target = await tempDir(t, 'dst');
    await restore(repo, await repo.findSnapshot(id), { target });
    assert.ok((await fs.readFile(join(target, 'd', 'B.bin'))).equals(prng(2, 60_000)));
  }
  const target = await tempDir(t, 'dst');
  await restore(repo, await repo.findSnapshot('latest'), { target });
  await assertSameTree(f.src, join(target, 'd'));
});

test('wrong key: wrong-key before anything but the config is read', async (t) => {
  const f = await twoSnapshots(t);
  const fb = new FaultyBackend(new LocalBackend(f.dir));
  await assert.rejects(Repository.open(fb, BackupKey.generate()), (e: unknown) => CofferError.is(e, 'wrong-key') && /wrong key/.test(e.message));
  assert.deepEqual(fb.calls, ['get config']);
});

test('a repository config of another version: unsupported-version (also for a wrong key)', async (t) => {
  const f = await twoSnapshots(t);
  const cfg = await fs.readFile(path(f.dir, 'config'));
  cfg[4] = 5;
  await fs.writeFile(path(f.dir, 'config'), cfg);
  const fb = new FaultyBackend(new LocalBackend(f.dir));
  await assert.rejects(Repository.open(fb, f.key), (e: unknown) => CofferError.is(e, 'unsupported-version') && /version 5/.test(e.message));
  await assert.rejects(Repository.open(fb, BackupKey.generate()), (e: unknown) => CofferError.is(e, 'unsupported-version'));
  assert.deepEqual([...new Set(fb.calls)], ['get config']);
});

test('no repository: not-a-repository, and a config that is not ours likewise', async (t) => {
  const empty = await tempDir(t, 'empty');
  await assert.rejects(Repository.open(new LocalBackend(empty), BackupKey.generate()), (e: unknown) => CofferError.is(e, 'not-a-repository'));
  await fs.writeFile(join(empty, 'config'), 'something else entirely');
  await assert.rejects(Repository.open(new LocalBackend(empty), BackupKey.generate()), (e: unknown) => CofferError.is(e, 'not-a-repository'));
  await assert.rejects(Repository.init(new LocalBackend(empty), BackupKey.generate()), (e: unknown) => CofferError.is(e, 'repository-exists'));
});

test('a repository whose config was lost: open says so (not "no repository, create one"), and init refuses to key a new repository over its snapshots and indexes', async (t) => {
  const f = await twoSnapshots(t);
  await fs.rm(path(f.dir, 'config'));
  await assert.rejects(Repository.open(new LocalBackend(f.dir), f.key), (e: unknown) => CofferError.is(e, 'not-a-repository') && /2 snapshots and \d+ index(es)? but its config is missing/.test(e.message));
  const before = await allPaths(f.dir);
  await assert.rejects(Repository.init(new LocalBackend(f.dir), f.key), (e: unknown) => CofferError.is(e, 'repository-exists') && /config is missing/.test(e.message));
  assert.deepEqual(await allPaths(f.dir), before, 'no new config written');
});
