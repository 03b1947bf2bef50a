/**
 * Prune never destroys the last good copy (issue 10, TESTING.md "Losing any one pack,
 * index or snapshot, or a replayed old index, then prune and forget"): the two cases
 * the review reproduced, the refusals, and a fault-injection sweep that loses, in turn,
 * every pack, index and snapshot of a small repository and replays old indexes, and
 * asserts that whatever restored before a prune/forget still restores after it, or that
 * the command refused and deleted nothing.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import {
  CofferError,
  LOCK_EXPIRY_MS,
  LocalBackend,
  Repository,
  backup,
  check,
  forgetSnapshots,
  hex,
  prune,
  repairIndex,
  repairPacks,
  repairSnapshots,
  restore,
  type ObjectWriter,
  type StorageBackend,
} from '../src/index.js';
import { allPaths, assertSameTree, dir, file, newRepo, prng, tempDir, writeTree, type TestRepo } from './fixtures/trees.js';

/** Later than any pack this test writes is young: prune treats unindexed packs as old. */
const LATER = () => Date.now() + LOCK_EXPIRY_MS + 60_000;

async function objects(root: string, under: string): Promise<string[]> {
  return (await allPaths(join(root, under))).filter((p) => !p.split('/').pop()!.startsWith('.') && /[0-9a-f]{64}$/.test(p)).map((p) => `${under}/${p}`);
}

/** Names and sizes of every object except locks: what a refused command must leave. */
async function contents(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const under of ['data', 'index', 'snapshots']) {
    for (const name of await objects(root, under)) out.push(`${name} ${(await fs.stat(join(root, name))).size}`);
  }
  return out.sort();
}

/** True when the snapshot restores exactly `copy`; false when restore refuses. A wrong restore fails the test. */
async function restores(repo: Repository, id: string, copy: string): Promise<boolean> {
  const target = await tempDir(undefined, 'ps-dst');
  try {
    let rec;
    try {
      rec = await repo.findSnapshot(id);
      await restore(repo, rec, { target });
    } catch (e) {
      if (e instanceof CofferError) return false;
      throw e;
    }
    await assertSameTree(copy, join(target, 'd'), { dirTimes: false });
    return true;
  } finally {
    await fs.rm(target, { recursive: true, force: true });
  }
}

async function snapshotCopy(t: TestContext, src: string): Promise<string> {
  const copy = join(await tempDir(t, 'ps-copy'), 'd');
  await fs.cp(src, copy, { recursive: true, preserveTimestamps: true });
  return copy;
}

test('two backups stored the same data twice and one copy was lost: restore works, prune keeps the copies that exist', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(1, 200_000)), 'b.txt': file('hello\n'.repeat(500)) }));
  const copy = await snapshotCopy(t, src);
  // Two processes back up at once: neither sees the other's index, so both store everything.
  // Both opened first, so the two start in the same turn: the second's open (I/O) no
  // longer gives the first a head start in which it could write its index before the
  // second reads the indexes (then the second stores nothing, and one index, not two).
  const [o1, o2] = [await tr.reopen(), await tr.reopen()];
  const [r1, r2] = await Promise.all([backup(o1, { paths: [src] }), backup(o2, { paths: [src] })]);
  const indexes = await objects(tr.dir, 'index');
  assert.equal(indexes.length, 2);
  // Lose every pack the first backup wrote.
  const first = await tr.reopen();
  const firstPacks = new Set<string>();
  for await (const e of first.tree(r1.snapshot)) if (e.type === 'file') for (const c of e.chunks) firstPacks.add(hex((await first.index()).locations(Buffer.from(c, 'hex'))[0]!.packId));
  assert.ok(firstPacks.size > 0);
  const packs = await objects(tr.dir, 'data');
  assert.ok(packs.length >= 2, 'two copies');
  const lost = packs.filter((p) => firstPacks.has(p.split('/').pop()!));
  assert.ok(lost.length > 0 && lost.length < packs.length);
  for (const p of lost) await fs.rm(join(tr.dir, p));

  for (const r of [r1, r2]) assert.ok(await restores(await tr.reopen(), hex(r.id), copy), 'restores from the surviving copy before prune');
  const pr = await prune(await tr.reopen());
  assert.ok(pr.missingPacksDropped > 0);
  assert.ok((await objects(tr.dir, 'data')).length > 0, 'the surviving copies are still there');
  for (const r of [r1, r2]) assert.ok(await restores(await tr.reopen(), hex(r.id), copy), 'restores after prune');
  const c = await check(await tr.reopen(), { readData: true });
  assert.deepEqual(c.problems, []);
});

test('an old index replayed next to the current one: prune does not delete the only pack on disk', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'shared.bin': file(prng(2, 150_000)), 'old.bin': file(prng(3, 150_000)) }));
  const s1 = await backup(tr.repo, { paths: [src] });
  await fs.rm(join(src, 'old.bin'));
  await writeTree(join(src, 'new.bin'), file(prng(4, 150_000)));
  const copy2 = await snapshotCopy(t, src);
  const s2 = await backup(tr.repo, { paths: [src] });
  // Keep the indexes as they are now: a server may serve them again later.
  const saved = new Map<string, Buffer>();
  for (const name of await objects(tr.dir, 'index')) saved.set(name, await fs.readFile(join(tr.dir, name)));
  await forgetSnapshots(tr.repo, [s1]);
  await prune(tr.repo); // repacks shared.bin out of the first pack, deletes that pack
  // The replay: the old indexes come back, naming packs that are gone.
  for (const [name, bytes] of saved) await fs.writeFile(join(tr.dir, name), bytes).catch(() => {});
  assert.ok(await restores(await tr.reopen(), hex(s2.id), copy2), 'restores with the replayed index');
  for (const now of [Date.now, LATER]) {
    await prune(await tr.reopen(), { now });
    assert.ok(await restores(await tr.reopen(), hex(s2.id), copy2), 'restores after prune');
  }
  assert.deepEqual((await check(await tr.reopen(), { readData: true })).problems, []);
});

test('a lost index: check, prune and forget+prune do not delete the packs; repair index brings the snapshots back', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(5, 120_000)) }));
  const copy = await snapshotCopy(t, src);
  const s1 = await backup(tr.repo, { paths: [src] });
  for (const name of await objects(tr.dir, 'index')) await fs.rm(join(tr.dir, name));
  const before = await contents(tr.dir);
  assert.equal(await restores(await tr.reopen(), hex(s1.id), copy), false, 'without an index nothing restores');
  const c = await check(await tr.reopen());
  assert.ok(c.unreferencedPacks > 0);
  // Prune refuses: the snapshot needs blobs no index describes.
  await assert.rejects(prune(await tr.reopen(), { now: LATER }), (e: unknown) => CofferError.is(e, 'needs-repair') && /repair index/.test(e.message));
  assert.deepEqual(await contents(tr.dir), before);
  // Even with the snapshot forgotten, old packs no index describes are not deleted.
  const saved = await fs.readFile(join(tr.dir, `snapshots/${hex(s1.id)}`));
  await forgetSnapshots(await tr.reopen(), [s1]);
  await assert.rejects(prune(await tr.reopen(), { now: LATER }), (e: unknown) => CofferError.is(e, 'needs-repair') && /lost index/.test(e.message));
  assert.equal((await objects(tr.dir, 'data')).length, before.filter((l) => l.startsWith('data/')).length);
  // The snapshot comes back (say, from a copy), and repair index finds its data.
  await fs.writeFile(join(tr.dir, `snapshots/${hex(s1.id)}`), saved);
  const r = await repairIndex(await tr.reopen());
  assert.ok(r.packs > 0 && r.packsRead === r.packs && r.unreadablePacks.length === 0);
  assert.ok(await restores(await tr.reopen(), hex(s1.id), copy));
  assert.deepEqual((await check(await tr.reopen(), { readData: true })).problems, []);
});

test('a snapshot object turned into a directory, a symlink loop or a dangling symlink is still listed: prune refuses and deletes nothing', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(7, 100_000)) }));
  await backup(tr.repo, { paths: [src] });
  await writeTree(join(src, 'b.bin'), file(prng(8, 100_000)));
  const s2 = await backup(tr.repo, { paths: [src] });
  const name = join(tr.dir, 'snapshots', hex(s2.id));
  // The dangling symlink: the object lives on a disk that is not mounted now (stat says
  // ENOENT, as for an object deleted since the listing, but the entry is there).
  for (const damage of [() => fs.mkdir(name), () => fs.symlink(hex(s2.id), name), () => fs.symlink('/nonexistent/coffer-unmounted/object', name)]) {
    await fs.rm(name, { recursive: true });
    await damage();
    const kept = async () => [...(await objects(tr.dir, 'data')), ...(await objects(tr.dir, 'index'))];
    const before = await kept();
    assert.ok((await tr.backend.list('snapshots/')).some((o) => o.name === `snapshots/${hex(s2.id)}`), 'listed');
    await assert.rejects(prune(await tr.reopen(), { now: LATER }), (e: unknown) => CofferError.is(e, 'needs-repair') && /can't be read/.test(e.message));
    assert.deepEqual(await kept(), before, 'nothing deleted');
  }
});

test('prune leaves unindexed packs younger than the lock expiry alone (a backup may still be writing them)', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(6, 120_000)) }));
  await backup(tr.repo, { paths: [src] });
  // Only the packs are there: the index and snapshot of a backup still running.
  for (const name of [...(await objects(tr.dir, 'index')), ...(await objects(tr.dir, 'snapshots'))]) await fs.rm(join(tr.dir, name));
  const packs = await objects(tr.dir, 'data');
  const r = await prune(await tr.reopen());
  assert.equal(r.youngPacksKept, packs.length);
  assert.deepEqual(await objects(tr.dir, 'data'), packs);
});

test('prune removes partial uploads (.tmp-*) older than the lock expiry, and keeps younger ones', async (t) => {
  const tr = await newRepo(t);
  await fs.mkdir(join(tr.dir, 'data', 'ab'), { recursive: true });
  const old = join(tr.dir, 'data', 'ab', '.tmp-0011223344556677');
  const young = join(tr.dir, 'data', 'ab', '.tmp-8899aabbccddeeff');
  await fs.writeFile(old, 'partial');
  await fs.writeFile(young, 'partial');
  const past = new Date(Date.now() - LOCK_EXPIRY_MS - 60_000);
  await fs.utimes(old, past, past);
  const r = await prune(tr.repo);
  assert.equal(r.partialsRemoved, 1);
  assert.equal(await fs.stat(old).then(() => true, () => false), false);
  assert.equal(await fs.stat(young).then(() => true, () => false), true);
});

test('readers ignore object names that do not match the spec patterns', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.txt': file('a') }));
  const s = await backup(tr.repo, { paths: [src] });
  const real = join(tr.dir, 'snapshots', hex(s.id));
  // A longer name ending in a valid ID, and a pack in the wrong fan-out directory.
  await fs.copyFile(real, join(tr.dir, 'snapshots', `x${hex(s.id)}`));
  const [pack] = await objects(tr.dir, 'data');
  const id = pack!.split('/').pop()!;
  const wrong = id.startsWith('00') ? '01' : '00';
  await fs.mkdir(join(tr.dir, 'data', wrong), { recursive: true });
  await fs.copyFile(join(tr.dir, pack!), join(tr.dir, 'data', wrong, id));
  const repo = await tr.reopen();
  const warnings: string[] = [];
  repo.onWarning = (m) => warnings.push(m);
  assert.deepEqual((await repo.snapshots()).map((x) => hex(x.id)), [hex(s.id)]);
  assert.deepEqual(warnings, []);
  const c = await check(repo);
  assert.equal(c.snapshots, 1);
  assert.equal(c.unreferencedPacks, 0);
});

// --- fault injection ---------------------------------------------------------------------

interface Base {
  dir: string;
  /** snapshot ID → a copy of what it backed up */
  expected: Map<string, string>;
  /** index objects that were current before the last prune, with their bytes */
  oldIndexes: Map<string, Buffer>;
}

/** S1; S2 and S3 at once (the same new data stored twice); S1 forgotten and pruned; S4. */
async function buildBase(t: TestContext): Promise<Base & { tr: TestRepo }> {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'fi-src'), 'd');
  const expected = new Map<string, string>();
  const take = async (id: Buffer) => expected.set(hex(id), await snapshotCopy(t, src));
  await writeTree(src, dir({ 'shared.bin': file(prng(10, 120_000)), 'one.bin': file(prng(11, 60_000)), 'n.txt': file('one\n') }));
  const s1 = await backup(tr.repo, { paths: [src], now: () => new Date(Date.UTC(2024, 0, 1)) });
  await take(s1.id);
  await fs.rm(join(src, 'one.bin'));
  await writeTree(join(src, 'two.bin'), file(prng(12, 60_000)));
  const [s2, s3] = await Promise.all([
    backup(await tr.reopen(), { paths: [src], now: () => new Date(Date.UTC(2024, 0, 2)) }),
    backup(await tr.reopen(), { paths: [src], now: () => new Date(Date.UTC(2024, 0, 3)) }),
  ]);
  await take(s2.id);
  await take(s3.id);
  const oldIndexes = new Map<string, Buffer>();
  for (const name of await objects(tr.dir, 'index')) oldIndexes.set(name, await fs.readFile(join(tr.dir, name)));
  await forgetSnapshots(await tr.reopen(), [s1]);
  expected.delete(hex(s1.id));
  await prune(await tr.reopen());
  await writeTree(join(src, 'three.bin'), file(prng(13, 60_000)));
  const s4 = await backup(await tr.reopen(), { paths: [src], now: () => new Date(Date.UTC(2024, 0, 4)) });
  await take(s4.id);
  return { tr, dir: tr.dir, expected, oldIndexes };
}

async function restorable(tr: TestRepo, expected: Map<string, string>): Promise<Set<string>> {
  const ok = new Set<string>();
  for (const [id, copy] of expected) if (await restores(await tr.reopen(), id, copy)) ok.add(id);
  return ok;
}

/** Runs `op`; then every snapshot in `before` (minus `gone`) must restore, or `op` refused and changed nothing. */
async function assertSafe(what: string, tr: TestRepo, expected: Map<string, string>, before: Set<string>, gone: string[], op: () => Promise<unknown>): Promise<'done' | 'refused'> {
  const was = await contents(tr.dir);
  try {
    await op();
  } catch (e) {
    if (!CofferError.is(e, 'needs-repair')) throw new Error(`${what}: failed instead of refusing: ${String(e)}`, { cause: e });
    assert.deepEqual(await contents(tr.dir), was, `${what}: refused, and deleted nothing`);
    return 'refused';
  }
  const after = await restorable(tr, expected);
  for (const id of before) if (!gone.includes(id)) assert.ok(after.has(id), `${what}: snapshot ${id.slice(0, 8)} restored before and not after`);
  return 'done';
}

test('fault injection: lose each pack, index and snapshot, replay old indexes; prune and forget+prune never lose what restored', async (t) => {
  const base = await buildBase(t);
  const packs = await objects(base.dir, 'data');
  const indexes = await objects(base.dir, 'index');
  const snaps = await objects(base.dir, 'snapshots');
  t.diagnostic(`base: ${packs.length} packs, ${indexes.length} indexes, ${snaps.length} snapshots, ${base.oldIndexes.size} old indexes`);
  type Fault = { name: string; apply: (root: string) => Promise<void> };
  const faults: Fault[] = [
    ...packs.map((p) => ({ name: `lose ${p.slice(0, 16)}`, apply: (root: string) => fs.rm(join(root, p)) })),
    ...indexes.map((p) => ({ name: `lose ${p.slice(0, 14)}`, apply: (root: string) => fs.rm(join(root, p)) })),
    ...snaps.map((p) => ({ name: `lose ${p.slice(0, 18)}`, apply: (root: string) => fs.rm(join(root, p)) })),
    ...[...base.oldIndexes].map(([name, bytes]) => ({ name: `replay ${name.slice(0, 14)}`, apply: (root: string) => fs.writeFile(join(root, name), bytes) })),
    {
      name: 'replay the old indexes instead of the current one',
      apply: async (root: string) => {
        for (const p of indexes) await fs.rm(join(root, p));
        for (const [name, bytes] of base.oldIndexes) await fs.writeFile(join(root, name), bytes);
      },
    },
    ...packs.map((p) => ({
      name: `replay old indexes and lose ${p.slice(0, 16)}`,
      apply: async (root: string) => {
        for (const [name, bytes] of base.oldIndexes) await fs.writeFile(join(root, name), bytes);
        await fs.rm(join(root, p));
      },
    })),
  ];
  const tally = { done: 0, refused: 0 };
  for (const fault of faults) {
    for (const now of [Date.now, LATER]) {
      const dirCopy = await tempDir(t, 'fi-case');
      await fs.cp(base.dir, dirCopy, { recursive: true, preserveTimestamps: true });
      await fault.apply(dirCopy);
      const tr: TestRepo = { ...base.tr, dir: dirCopy, reopen: () => Repository.open(new LocalBackend(dirCopy), base.tr.key) };
      const what = `${fault.name}${now === LATER ? ' (packs old)' : ''}`;
      const before = await restorable(tr, base.expected);
      const first = await assertSafe(`${what}, prune`, tr, base.expected, before, [], async () => prune(await tr.reopen(), { now }));
      tally[first]++;
      // forget the oldest snapshot that is still listed, then prune
      const listed = (await (await tr.reopen()).snapshots()).map((s) => hex(s.id));
      const victim = listed[0];
      if (victim) {
        const still = await restorable(tr, base.expected);
        await forgetSnapshots(await tr.reopen(), [{ id: Buffer.from(victim, 'hex') }]);
        const second = await assertSafe(`${what}, forget+prune`, tr, base.expected, still, [victim], async () => prune(await tr.reopen(), { now }));
        tally[second]++;
        t.diagnostic(`${what}: ${before.size} restored before; prune ${first}, forget+prune ${second}`);
      }
      await fs.rm(dirCopy, { recursive: true, force: true });
    }
  }
  t.diagnostic(`${faults.length} faults × 2 clocks: ${tally.done} commands ran, ${tally.refused} refused`);
});

test('a full disk: prune deletes what nothing needs before it writes, so it can run; restore and check need no lock', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(20, 100_000)) }));
  const s1 = await backup(tr.repo, { paths: [src] });
  await fs.rm(join(src, 'a.bin'));
  await writeTree(join(src, 'b.bin'), file(prng(21, 100_000)));
  const copy2 = await snapshotCopy(t, src);
  const s2 = await backup(tr.repo, { paths: [src] });
  await forgetSnapshots(tr.repo, [s1]);

  // Storage with no room: every write fails until something has been deleted (a lock,
  // a few hundred bytes, still fits: a disk is rarely full to the last block).
  const inner = new LocalBackend(tr.dir);
  let freed = false;
  const full = (name: string) => {
    if (!freed && !name.startsWith('locks/')) throw new CofferError('storage', `writing ${name} failed: no space left on device`);
  };
  const disk: StorageBackend = {
    location: inner.location,
    put: async (n, p) => (full(n), inner.put(n, p)),
    create: async (n) => (full(n), inner.create(n)),
    get: (n, r) => inner.get(n, r),
    stat: (n) => inner.stat(n),
    list: (p) => inner.list(p),
    delete: async (n) => {
      if (n.startsWith('data/')) freed = true;
      return inner.delete(n);
    },
    sync: () => inner.sync(),
  };
  const r = await prune(await tr.reopen(disk));
  assert.equal(r.packsDeleted, 1);
  assert.ok(await restores(await tr.reopen(), hex(s2.id), copy2));
  assert.deepEqual((await check(await tr.reopen(), { readData: true })).problems, []);

  // With no room even for a lock, reads still work without one.
  freed = false;
  const noRoom = async (n: string): Promise<never> => {
    throw new CofferError('storage', `writing ${n} failed: no space left on device`);
  };
  const noLocks: StorageBackend = { ...disk, put: noRoom, create: noRoom };
  const repo = await tr.reopen(noLocks);
  const target = await tempDir(t, 'ps-dst');
  // Restore falls back to reading without a lock by itself, and says so (spec §11).
  const warned = await restore(repo, (await repo.snapshots())[0]!, { target });
  assert.ok(warned.warnings.some((w) => 'noLock' in w && w.noLock), 'the fallback is reported as a warning');
  await restore(repo, (await repo.snapshots())[0]!, { target: await tempDir(t, 'ps-dst2'), noLock: true });
  // check needs the explicit --no-lock.
  await assert.rejects(check(repo), (e: unknown) => CofferError.is(e, 'storage'));
  assert.deepEqual((await check(repo, { noLock: true })).problems, []);
});

/** A local backend where each pack's first bytes land, then the disk is full. */
function fillsOnPackWrite(root: string): StorageBackend {
  const inner = new LocalBackend(root);
  return {
    location: inner.location,
    put: (n, p) => inner.put(n, p),
    create: async (n): Promise<ObjectWriter> => {
      const w = await inner.create(n);
      if (!n.startsWith('data/')) return w;
      return {
        write: async (parts) => {
          await w.write(parts);
          throw new CofferError('storage', `writing ${n} failed: no space left on device`);
        },
        commit: () => w.commit(),
        abort: () => w.abort(),
      };
    },
    get: (n, r) => inner.get(n, r),
    stat: (n) => inner.stat(n),
    list: (p) => inner.list(p),
    delete: (n) => inner.delete(n),
    sync: () => inner.sync(),
  };
}

const partials = async (root: string) => (await allPaths(root)).filter((p) => p.split('/').pop()!.startsWith('.tmp-'));

test('a disk that fills while prune repacks: a storage error, no partial pack (.tmp-*) left taking the space, nothing lost; prune runs once there is room', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(30, 100_000)), 'b.bin': file(prng(31, 100_000)) }));
  const s1 = await backup(tr.repo, { paths: [src] });
  await fs.rm(join(src, 'b.bin'));
  const copy2 = await snapshotCopy(t, src);
  const s2 = await backup(tr.repo, { paths: [src] });
  await forgetSnapshots(tr.repo, [s1]);
  const before = await contents(tr.dir);

  const disk = fillsOnPackWrite(tr.dir);
  await assert.rejects(prune(await tr.reopen(disk)), (e: unknown) => CofferError.is(e, 'storage') && /no space left/.test(e.message));
  assert.deepEqual(await partials(tr.dir), [], 'no partial pack left behind');
  assert.deepEqual(await contents(tr.dir), before, 'nothing deleted, nothing added');
  assert.deepEqual(await fs.readdir(join(tr.dir, 'locks')), []);
  const r = await prune(await tr.reopen());
  assert.equal(r.packsRepacked, 1);
  assert.ok(await restores(await tr.reopen(), hex(s2.id), copy2));
  assert.deepEqual((await check(await tr.reopen(), { readData: true })).problems, []);
});

test('a disk that fills while repair snapshots writes a file list: a storage error, no partial pack left; the repair runs once there is room', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(40, 100_000)) }));
  await backup(tr.repo, { paths: [src] });
  const p1 = await objects(tr.dir, 'data');
  await writeTree(join(src, 'b.bin'), file(prng(41, 100_000)));
  const s2 = await backup(tr.repo, { paths: [src] });
  // a.bin's data (and the first snapshot's file list) are lost; the second snapshot's file list is not.
  for (const name of p1) await fs.rm(join(tr.dir, name));
  const before = await contents(tr.dir);
  await assert.rejects(repairSnapshots(await tr.reopen(fillsOnPackWrite(tr.dir))), (e: unknown) => CofferError.is(e, 'storage') && /no space left/.test(e.message));
  assert.deepEqual(await partials(tr.dir), [], 'no partial pack left behind');
  assert.deepEqual(await contents(tr.dir), before);
  const r = await repairSnapshots(await tr.reopen());
  const fixed = r.repairs.find((x) => x.id === hex(s2.id));
  assert.ok(fixed && fixed.status === 'rewritten' && fixed.newId, JSON.stringify(r.repairs));
});

test('a pack with a damaged segment: repair index keeps the blobs of it that still read indexed, so repair snapshots drops only the file whose data is damaged', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'ps-src'), 'd');
  await writeTree(src, dir({ 'a.bin': file(prng(7, 300_000)), 'b.bin': file(prng(8, 300_000)) }));
  const s1 = await backup(tr.repo, { paths: [src] });
  const [pack] = await objects(tr.dir, 'data');
  // One byte of the pack's second segment (plaintext 64–128 KiB, inside the first file
  // written): the pack no longer opens whole, so its trailer can't be read.
  const p = join(tr.dir, pack!);
  const bytes = await fs.readFile(p);
  bytes[40 + (65536 + 16) + 100]! ^= 1;
  await fs.writeFile(p, bytes);
  // --read-all: the pack's length is right, so only reading it finds the damage.
  const r = await repairIndex(await tr.reopen(), { readAll: true });
  assert.equal(r.unreadablePacks.length, 1);
  assert.ok((r.unreadablePacks[0]!.keptBlobs ?? 0) > 0, 'the blobs that still read stay indexed');
  const repaired = await repairSnapshots(await tr.reopen(), { forget: true });
  const rewritten = repaired.repairs.find((x) => x.id === hex(s1.id));
  assert.ok(rewritten && rewritten.status === 'rewritten', JSON.stringify(repaired.repairs));
  assert.equal(rewritten.removedFiles.length, 1, `only the damaged file is dropped: ${rewritten.removedFiles.join(', ')}`);
  const repo = await tr.reopen();
  const target = await tempDir(t, 'ps-dst');
  await restore(repo, (await repo.snapshots())[0]!, { target });
  const kept = await fs.readdir(join(target, 'd'));
  assert.equal(kept.length, 1);
  assert.ok((await fs.readFile(join(target, 'd', kept[0]!))).equals(await fs.readFile(join(src, kept[0]!))));
});

test('repair packs: a damaged pack (one bad segment, or cut short) is salvaged — what still reads goes into new packs, the pack is deleted — so that after repair snapshots, prune works again and check is clean', async (t) => {
  for (const damage of ['segment', 'truncated'] as const) {
    const tr = await newRepo(t);
    const src = join(await tempDir(t, 'rp-src'), 'd');
    await writeTree(src, dir({ 'a.bin': file(prng(7, 300_000)), 'b.bin': file(prng(8, 300_000)), 'c.txt': file(Buffer.from('small and intact')) }));
    const s1 = await backup(tr.repo, { paths: [src] });
    const packs = await objects(tr.dir, 'data');
    const big = (await Promise.all(packs.map(async (n) => [n, (await fs.stat(join(tr.dir, n))).size] as const))).sort((x, y) => y[1] - x[1])[0]![0];
    const p = join(tr.dir, big);
    const bytes = await fs.readFile(p);
    if (damage === 'segment') {
      bytes[40 + (65536 + 16) + 100]! ^= 1; // inside the first file written
      await fs.writeFile(p, bytes);
    } else await fs.writeFile(p, bytes.subarray(0, bytes.length - 40)); // cut short: its last segment (the last blobs, the file list, the trailer) is lost
    const id = big.slice(big.lastIndexOf('/') + 1);
    // The files a damaged second segment (plaintext 64–128 KiB of the pack) takes with it:
    // those with a blob there. Which ones depends on the order the blobs were packed in
    // (a small file's blob may sit in that segment beside a.bin's): read from the index.
    const lostInSegment: string[] = [];
    if (damage === 'segment') {
      const index = await (await tr.reopen()).index();
      for await (const e of tr.repo.tree(s1.snapshot)) {
        if (e.type !== 'file') continue;
        const hit = e.chunks.some((c) => {
          const loc = index.get(Buffer.from(c, 'hex'))!;
          return big.endsWith(hex(loc.packId)) && loc.offset < 2 * 65536 && loc.offset + loc.storedLength > 65536;
        });
        if (hit) lostInSegment.push(e.path);
      }
      assert.ok(lostInSegment.length >= 1 && lostInSegment.length < 3, `the damage takes some files, not all: ${lostInSegment.join(', ')}`);
    }
    // Before: prune refuses (data only in a damaged pack, or a pack that can't be opened), so it stays stuck.
    if (damage === 'truncated') await assert.rejects(prune(await tr.reopen(), { now: LATER }), (e: unknown) => CofferError.is(e, 'needs-repair'));
    const r = await repairPacks(await tr.reopen(), [big]);
    assert.deepEqual(r.packs, [big]);
    assert.ok(r.salvaged > 0, `${damage}: blobs salvaged ${JSON.stringify(r)}`);
    assert.ok(r.lost.length > 0 && r.salvaged + r.lost.length + r.elsewhere > r.lost.length, `${damage}: what does not read is reported lost, the rest salvaged: ${JSON.stringify(r)}`);
    assert.ok(!(await objects(tr.dir, 'data')).some((n) => n.endsWith(id)), 'the damaged pack is deleted');
    const repaired = await repairSnapshots(await tr.reopen(), { forget: true });
    if (damage === 'segment') {
      const rewritten = repaired.repairs.find((x) => x.id === hex(s1.id));
      assert.ok(rewritten && rewritten.status === 'rewritten', JSON.stringify(repaired.repairs));
      assert.deepEqual([...rewritten.removedFiles].sort(), lostInSegment.sort(), 'only the files with data in the damaged segment are dropped');
    } else assert.equal(repaired.repairs.length, 1, 'the snapshot whose file list was in the last segment: removed (forget)');
    await prune(await tr.reopen(), { now: LATER });
    const c = await check(await tr.reopen(), { readData: true });
    assert.deepEqual(c.problems, [], `${damage}: check is clean after the repair`);
    if (damage === 'truncated') continue;
    const repo = await tr.reopen();
    const target = await tempDir(t, 'rp-dst');
    await restore(repo, (await repo.snapshots())[0]!, { target });
    const kept = (await fs.readdir(join(target, 'd'))).sort();
    assert.equal(kept.length, 3 - lostInSegment.length);
    for (const k of kept) assert.ok((await fs.readFile(join(target, 'd', k))).equals(await fs.readFile(join(src, k))), k);
  }
  // Garbage names: refused before anything is locked or written.
  const tr = await newRepo(t);
  await assert.rejects(repairPacks(tr.repo, ['nonsense']), (e: unknown) => CofferError.is(e, 'invalid-argument'));
  await assert.rejects(repairPacks(tr.repo, []), (e: unknown) => CofferError.is(e, 'invalid-argument'));
  await assert.rejects(repairPacks(tr.repo, ['ab'.repeat(32)]), (e: unknown) => CofferError.is(e, 'not-found'));
});
