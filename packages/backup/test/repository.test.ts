/**
 * The repository end to end on a real LocalBackend in temporary directories (TESTING.md,
 * "Sealed objects and repositories"): backup → restore byte-identical with modes, mtimes,
 * symlinks and empty things; deduplication across files and snapshots; retention
 * policies; forget + prune; concurrent writers; locks.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  CofferError,
  LocalBackend,
  RepositoryLock,
  applyPolicy,
  backup,
  check,
  forgetSnapshots,
  hex,
  isEmptyPolicy,
  prune,
  removeLocks,
  restore,
  type ByteRange,
  type RetentionPolicy,
  type Snapshot,
  type SnapshotRecord,
} from '../src/index.js';
import { SMALL_CHUNKER, assertSameTree, dir, file, link, newRepo, prng, sampleTree, tempDir, writeTree } from './fixtures/trees.js';

const T0 = 1_700_000_000_000; // fixed mtimes: what was backed up is what must come back

test('backup → restore is byte-identical: modes, mtimes, symlinks, empty dirs and files, one-chunk files, many small files', async (t) => {
  const tr = await newRepo(t);
  const repo = tr.repo;
  const src = join(await tempDir(t, 'src'), 'data');
  const small: Record<string, ReturnType<typeof file>> = {};
  for (let i = 0; i < 300; i++) small[`f${String(i).padStart(3, '0')}.txt`] = file(`small file ${i}\n`, 0o644, T0 + i);
  await writeTree(
    src,
    dir(
      {
        'empty-file': file('', 0o640, T0 + 1),
        'one-chunk.bin': file(prng(1, SMALL_CHUNKER.minSize), 0o600, T0 + 2),
        'max-chunk.bin': file(prng(2, SMALL_CHUNKER.maxSize), 0o644, T0 + 3),
        'multi-chunk.bin': file(prng(3, 300_000), 0o755, T0 + 4),
        'script.sh': file('#!/bin/sh\necho hi\n', 0o750, T0 + 5),
        'setuid-ish': file('x', 0o4755, T0 + 6),
        'zeros.bin': file(Buffer.alloc(100_000), 0o644, T0 + 7),
        'ünïcødé name ✓.txt': file('unicode', 0o644, T0 + 8),
        'rel-link': link('script.sh'),
        'abs-link': link('/etc/hostname'),
        'dangling-link': link('does/not/exist'),
        'empty-dir': dir({}, 0o700, T0 + 9),
        'nested': dir({ deeper: dir({ deepest: dir({ 'leaf.txt': file('leaf', 0o444, T0 + 10) }, 0o755, T0 + 11) }, 0o711, T0 + 12) }, 0o755, T0 + 13),
        'many': dir(small, 0o755, T0 + 14),
      },
      0o755,
      T0 + 15,
    ),
  );

  const r = await backup(repo, { paths: [src] });
  assert.equal(r.warnings.length, 0);
  assert.equal(r.snapshot.stats.files, 309);
  assert.equal(r.snapshot.stats.dirs, 6);

  // The file of exactly minSize is one chunk; the empty file none.
  const entries = new Map<string, { chunks?: string[] }>();
  for await (const e of repo.tree(r.snapshot)) entries.set(e.path, e.type === 'file' ? e : {});
  assert.equal(entries.get('data/one-chunk.bin')?.chunks?.length, 1);
  assert.equal(entries.get('data/empty-file')?.chunks?.length, 0);
  assert.ok((entries.get('data/multi-chunk.bin')?.chunks?.length ?? 0) > 10);

  const target = await tempDir(t, 'dst');
  const [rec] = await repo.snapshots();
  const res = await restore(repo, rec!, { target });
  assert.deepEqual({ files: res.files, dirs: res.dirs, symlinks: res.symlinks }, { files: 309, dirs: 6, symlinks: 3 });
  await assertSameTree(src, join(target, 'data'));

  // A fresh process (new Repository, no cached index) restores the same.
  const target2 = await tempDir(t, 'dst2');
  const repo2 = await tr.reopen();
  await restore(repo2, await repo2.findSnapshot(hex(rec!.id).slice(0, 8)), { target: target2 });
  await assertSameTree(src, join(target2, 'data'));
});

test('a single file and several roots back up and restore; the snapshot lists the absolute paths', async (t) => {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'src');
  await writeTree(join(base, 'one.txt'), file('one', 0o600, T0));
  await writeTree(join(base, 'two'), dir({ 'x.bin': file(prng(9, 50_000), 0o644, T0) }, 0o755, T0));
  const r = await backup(tr.repo, { paths: [join(base, 'two'), join(base, 'one.txt')] });
  assert.deepEqual(r.snapshot.paths, [join(base, 'one.txt'), join(base, 'two')]);
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, await tr.repo.findSnapshot('latest'), { target });
  assert.equal(await fs.readFile(join(target, 'one.txt'), 'utf8'), 'one');
  assert.equal((await fs.stat(join(target, 'one.txt'))).mode & 0o777, 0o600);
  await assertSameTree(join(base, 'two'), join(target, 'two'));
});

test('restore refuses to overwrite existing files unless told, and then replaces them whole', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, sampleTree(4));
  await backup(tr.repo, { paths: [src] });
  const target = await tempDir(t, 'dst');
  await fs.mkdir(join(target, 'd'), { recursive: true });
  await fs.writeFile(join(target, 'd', 'notes.txt'), 'mine');
  const rec = await tr.repo.findSnapshot('latest');
  await assert.rejects(restore(tr.repo, rec, { target }), (e: unknown) => CofferError.is(e, 'exists') && /--overwrite/.test(e.message));
  assert.equal(await fs.readFile(join(target, 'd', 'notes.txt'), 'utf8'), 'mine', 'nothing touched');
  assert.deepEqual(await fs.readdir(join(target, 'd')), ['notes.txt'], 'nothing written before refusing');
  await restore(tr.repo, rec, { target, overwrite: true });
  await assertSameTree(src, join(target, 'd'));
});

test('restore\'s clash check skips what is under a missing directory, and only that: a clash after missing directories is still found', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  // Walk order: a/… (a exists in the target, a/new does not), b/deep/… (b missing), then z.txt.
  await writeTree(src, dir({ a: dir({ new: dir({ f: file('1') }), x: file('2') }), b: dir({ deep: dir({ y: file('3') }) }), 'z.txt': file('4') }));
  await backup(tr.repo, { paths: [src] });
  const rec = await tr.repo.findSnapshot('latest');
  const target = await tempDir(t, 'dst');
  await fs.mkdir(join(target, 'd', 'a'), { recursive: true });
  await fs.writeFile(join(target, 'd', 'z.txt'), 'mine');
  await assert.rejects(restore(tr.repo, rec, { target }), (e: unknown) => CofferError.is(e, 'exists') && /z\.txt/.test(e.message));
  await fs.rm(join(target, 'd', 'z.txt'));
  await fs.writeFile(join(target, 'd', 'a', 'x'), 'mine');
  await assert.rejects(restore(tr.repo, rec, { target }), (e: unknown) => CofferError.is(e, 'exists') && /a\/x/.test(e.message), 'a/new missing must not hide a/x');
  await fs.rm(join(target, 'd', 'a', 'x'));
  await restore(tr.repo, rec, { target });
  await assertSameTree(src, join(target, 'd'));
});

test('snapshot lookup: latest, unique prefix, unknown, ambiguous, not hex', async (t) => {
  const tr = await newRepo(t);
  await assert.rejects(tr.repo.findSnapshot('latest'), (e: unknown) => CofferError.is(e, 'not-found'));
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, sampleTree(5, 10_000));
  const a = await backup(tr.repo, { paths: [src], now: () => new Date(T0) });
  const b = await backup(tr.repo, { paths: [src], now: () => new Date(T0 + 1000) });
  assert.ok((await tr.repo.findSnapshot('latest')).id.equals(b.id));
  assert.ok((await tr.repo.findSnapshot(hex(a.id).slice(0, 6).toUpperCase())).id.equals(a.id));
  await assert.rejects(tr.repo.findSnapshot('ffff'.repeat(16).replace(/^./, hex(a.id)[0] === 'f' ? '0' : 'f')), (e: unknown) => CofferError.is(e, 'not-found'));
  await assert.rejects(tr.repo.findSnapshot('xyz!'), (e: unknown) => CofferError.is(e, 'invalid-argument'));
  await assert.rejects(backup(tr.repo, { paths: [join(src, 'nope')] }), (e: unknown) => CofferError.is(e, 'not-found') && /no such file/.test(e.message));
  await assert.rejects(backup(tr.repo, { paths: [] }), (e: unknown) => CofferError.is(e, 'invalid-argument'));
});

test('dedup: identical files are stored once; an unchanged second backup adds nothing and reads no file', async (t) => {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'src');
  const payload = prng(7, 150_000);
  const src = join(base, 'd');
  await writeTree(src, dir({ 'a.bin': file(payload), 'copy-of-a.bin': file(payload), 'c.bin': file(prng(8, 150_000)) }));

  const first = await backup(tr.repo, { paths: [src] });
  // Two files' worth of unique data (a, c) plus a tiny tree: not three.
  assert.ok(first.snapshot.stats.addedBytes < 2 * 150_000 + 20_000, `added ${first.snapshot.stats.addedBytes}`);
  assert.ok(first.snapshot.stats.addedBytes > 2 * 150_000 - 20_000);
  // The engine counts what its chunk workers read: the first backup read all three files.
  assert.deepEqual(first.read, { files: 3, bytes: 3 * 150_000 });

  const second = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(second.read, { files: 0, bytes: 0 }, 'unchanged files are not read');
  assert.equal(second.snapshot.stats.addedBytes, 0);
  assert.equal(second.snapshot.stats.newChunks, 0);
  assert.deepEqual(second.snapshot.tree, first.snapshot.tree, 'same tree blobs');

  // Another path holding the same content: only its tree is new.
  const other = join(base, 'other');
  await writeTree(other, dir({ 'moved.bin': file(payload) }));
  const third = await backup(tr.repo, { paths: [other] });
  assert.ok(third.snapshot.stats.addedBytes < 2000, `added ${third.snapshot.stats.addedBytes}`);

  // A changed file is re-read; appending to it adds about what was appended.
  await fs.appendFile(join(src, 'c.bin'), prng(99, 10_000));
  const fourth = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(fourth.read, { files: 1, bytes: 160_000 }, 'only the changed file is re-read');
  assert.ok(fourth.snapshot.stats.addedBytes < 10_000 + 3 * SMALL_CHUNKER.maxSize, `added ${fourth.snapshot.stats.addedBytes}`);

  // With --parent none nothing is trusted, everything re-read, still nothing added.
  const fifth = await backup(tr.repo, { paths: [src], parent: 'none' });
  assert.deepEqual(fifth.read, { files: 3, bytes: 2 * 150_000 + 160_000 });
  assert.equal(fifth.snapshot.stats.newChunks, 0);

  const target = await tempDir(t, 'dst');
  await restore(tr.repo, await tr.repo.findSnapshot('latest'), { target });
  await assertSameTree(src, join(target, 'd'));
  assert.deepEqual((await check(tr.repo, { readData: true })).problems, []);
});

test('a file changed without changing its size or mtime is still re-read (ctime/inode differ)', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, dir({ 'f.bin': file(prng(1, 20_000), 0o644, T0) }));
  await backup(tr.repo, { paths: [src] });
  await fs.writeFile(join(src, 'f.bin'), prng(2, 20_000));
  await fs.utimes(join(src, 'f.bin'), new Date(T0), new Date(T0));
  await backup(tr.repo, { paths: [src] });
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, await tr.repo.findSnapshot('latest'), { target });
  assert.ok((await fs.readFile(join(target, 'd', 'f.bin'))).equals(prng(2, 20_000)));
});

test(
  'mtimes come back to the microsecond, not rounded down to the millisecond',
  async (t) => {
    const tr = await newRepo(t);
    const src = join(await tempDir(t, 'src'), 'd');
    await writeTree(src, dir({ 'f.txt': file('x'), sub: dir({}) }));
    // Times with a sub-millisecond part, as real file systems have.
    await fs.utimes(join(src, 'f.txt'), 1_700_000_000.123456, 1_700_000_000.123456);
    await fs.utimes(join(src, 'sub'), 1_700_000_001.987654, 1_700_000_001.987654);
    await backup(tr.repo, { paths: [src] });
    const target = await tempDir(t, 'dst');
    await restore(tr.repo, await tr.repo.findSnapshot('latest'), { target });
    await assertSameTree(src, join(target, 'd'), { mtimeToleranceMs: 0.01 });
  },
);

// --- retention policies on synthetic snapshot records ---------------------------------

function rec(time: string, host = 'h', paths = ['/p'], n = 0): SnapshotRecord {
  const snapshot: Snapshot = {
    version: 1,
    time,
    hostname: host,
    username: 'u',
    paths,
    tags: [],
    tree: [],
    stats: { files: 0, dirs: 0, bytes: 0, addedBytes: 0, newChunks: 0 },
  };
  const id = Buffer.alloc(32);
  id.write(`${time}|${host}|${n}`.slice(0, 32));
  return { id, snapshot };
}
const times = (rs: SnapshotRecord[]) => rs.map((r) => r.snapshot.time).sort();

test('applyPolicy: keep-last, keep-daily/weekly/monthly/yearly, union of rules, groups by host and paths', () => {
  // Two snapshots a day for 20 days in January 2024, at 06:00 and 18:00 UTC.
  const all: SnapshotRecord[] = [];
  for (let d = 1; d <= 20; d++) {
    for (const h of ['06', '18']) all.push(rec(`2024-01-${String(d).padStart(2, '0')}T${h}:00:00.000Z`));
  }
  assert.deepEqual(times(applyPolicy(all, { last: 3 }).keep), ['2024-01-19T18:00:00.000Z', '2024-01-20T06:00:00.000Z', '2024-01-20T18:00:00.000Z']);
  // keep-daily keeps the newest of each of the 3 newest days.
  assert.deepEqual(times(applyPolicy(all, { daily: 3 }).keep), ['2024-01-18T18:00:00.000Z', '2024-01-19T18:00:00.000Z', '2024-01-20T18:00:00.000Z']);
  // ISO weeks: 2024-01-01 is a Monday; weeks end on 7th, 14th; the 15th–20th is week 3.
  assert.deepEqual(times(applyPolicy(all, { weekly: 2 }).keep), ['2024-01-14T18:00:00.000Z', '2024-01-20T18:00:00.000Z']);
  assert.deepEqual(times(applyPolicy(all, { weekly: 10 }).keep), ['2024-01-07T18:00:00.000Z', '2024-01-14T18:00:00.000Z', '2024-01-20T18:00:00.000Z']);
  assert.deepEqual(times(applyPolicy(all, { monthly: 5 }).keep), ['2024-01-20T18:00:00.000Z']);
  assert.deepEqual(times(applyPolicy(all, { hourly: 2 }).keep), ['2024-01-20T06:00:00.000Z', '2024-01-20T18:00:00.000Z']);
  // A union: last 1 + daily 2 + weekly 2.
  assert.deepEqual(times(applyPolicy(all, { last: 1, daily: 2, weekly: 2 }).keep), [
    '2024-01-14T18:00:00.000Z',
    '2024-01-19T18:00:00.000Z',
    '2024-01-20T18:00:00.000Z',
  ]);
  // A count of 0 or a duration of 0 is no rule (as restic reads it): alone, refused; with
  // another rule, that rule decides.
  for (const zero of [{ last: 0 }, { daily: 0, yearly: 0 }, { within: { years: 0, months: 0, days: 0, hours: 0 } }, { withinDaily: { years: 0, months: 0, days: 0, hours: 0 } }] as RetentionPolicy[]) {
    assert.throws(() => applyPolicy(all, zero), (e: unknown) => CofferError.is(e, 'invalid-argument') && /refusing to remove everything/.test((e as Error).message), JSON.stringify(zero));
  }
  assert.deepEqual(times(applyPolicy(all, { last: 0, daily: 1 }).keep), ['2024-01-20T18:00:00.000Z']);
  // A tag rule that keeps nothing (no snapshot has the tag: a typo) would remove every
  // snapshot: refused. With a count rule besides, the count rule keeps the newest.
  assert.throws(() => applyPolicy(all, { tags: [['no-such-tag']] }), (e: unknown) => CofferError.is(e, 'invalid-argument') && /keeps no snapshot \(no snapshot has no-such-tag\)/.test((e as Error).message));
  assert.deepEqual(times(applyPolicy(all, { tags: [['no-such-tag']], last: 1 }).keep), ['2024-01-20T18:00:00.000Z']);

  // Monthly and yearly across years.
  const years = ['2021-03-01', '2021-12-31', '2022-06-15', '2022-06-30', '2023-01-01'].map((d) => rec(`${d}T12:00:00.000Z`));
  assert.deepEqual(times(applyPolicy(years, { yearly: 2 }).keep), ['2022-06-30T12:00:00.000Z', '2023-01-01T12:00:00.000Z']);
  assert.deepEqual(times(applyPolicy(years, { monthly: 3 }).keep), ['2021-12-31T12:00:00.000Z', '2022-06-30T12:00:00.000Z', '2023-01-01T12:00:00.000Z']);

  // Another host's (or another path set's) snapshots are a separate group.
  const mixed = [rec('2024-01-01T00:00:00.000Z', 'a'), rec('2024-01-02T00:00:00.000Z', 'a'), rec('2024-01-01T00:00:00.000Z', 'b'), rec('2024-01-03T00:00:00.000Z', 'a', ['/q'])];
  const kept = applyPolicy(mixed, { last: 1 }).keep.map((r) => `${r.snapshot.hostname}${r.snapshot.paths[0]}@${r.snapshot.time.slice(0, 10)}`).sort();
  assert.deepEqual(kept, ['a/p@2024-01-02', 'a/q@2024-01-03', 'b/p@2024-01-01']);
});

test('applyPolicy refuses an empty policy and bad numbers', () => {
  const all = [rec('2024-01-01T00:00:00.000Z')];
  for (const bad of [{}, { last: -1 }, { daily: 1.5 }, { weekly: Number.NaN }] as RetentionPolicy[]) {
    assert.throws(() => applyPolicy(all, bad), (e: unknown) => CofferError.is(e, 'invalid-argument'), JSON.stringify(bad));
  }
});

test('applyPolicy properties: keep and remove partition the input; keep-last n keeps the n newest; more is never less', () => {
  const arbRec = fc.record({
    t: fc.integer({ min: Date.UTC(2020, 0, 1), max: Date.UTC(2025, 0, 1) }),
    host: fc.constantFrom('a', 'b'),
    n: fc.nat(1000),
  });
  const arbPolicy = fc.record(
    { last: fc.nat(5), hourly: fc.nat(5), daily: fc.nat(5), weekly: fc.nat(5), monthly: fc.nat(5), yearly: fc.nat(5) },
    { requiredKeys: [] },
  );
  fc.assert(
    fc.property(fc.array(arbRec, { maxLength: 40 }), arbPolicy, fc.nat(3), (rs, policy, extra) => {
      fc.pre(!isEmptyPolicy(policy));
      const all = rs.map((r, i) => rec(new Date(r.t).toISOString(), r.host, ['/p'], i));
      const { keep, remove } = applyPolicy(all, policy);
      assert.equal(keep.length + remove.length, all.length);
      assert.ok(keep.every((k) => !remove.includes(k)));
      for (const host of ['a', 'b']) {
        const mine = all.filter((r) => r.snapshot.hostname === host).sort((x, y) => Date.parse(y.snapshot.time) - Date.parse(x.snapshot.time) || Buffer.compare(y.id, x.id));
        const k = keep.filter((r) => r.snapshot.hostname === host);
        // The newest snapshot of a group is kept by any rule with n ≥ 1 (equal times: the
        // higher ID counts as newer, as in applyPolicy).
        if (mine.length > 0 && Object.values(policy).some((v) => v > 0)) assert.ok(k.includes(mine[0]!));
        if (policy.last !== undefined) {
          for (const s of mine.slice(0, policy.last)) assert.ok(k.includes(s), 'keep-last keeps the newest');
        }
      }
      // Raising any count keeps a superset.
      const bigger = Object.fromEntries(Object.entries(policy).map(([k, v]) => [k, v + extra])) as RetentionPolicy;
      const keep2 = new Set(applyPolicy(all, bigger).keep);
      assert.ok(keep.every((s) => keep2.has(s)));
    }),
    { numRuns: 200 },
  );
});

// --- forget + prune --------------------------------------------------------------------

test('forget + prune: the remaining snapshots restore byte-identical, check --read-data is clean, space is freed', async (t) => {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'src');
  const src = join(base, 'd');
  const copies: string[] = [];
  const ids: Buffer[] = [];
  for (let gen = 0; gen < 4; gen++) {
    // Each generation keeps a shared file and replaces a unique one.
    await fs.rm(src, { recursive: true, force: true });
    await writeTree(src, dir({ 'shared.bin': file(prng(100, 100_000), 0o644, T0), [`gen${gen}.bin`]: file(prng(200 + gen, 120_000), 0o644, T0 + gen) }));
    const r = await backup(tr.repo, { paths: [src], now: () => new Date(Date.UTC(2024, 0, 1 + gen)) });
    ids.push(r.id);
    const copy = join(base, `copy${gen}`);
    await fs.cp(src, copy, { recursive: true, preserveTimestamps: true });
    copies.push(copy);
  }
  const plan = applyPolicy(await tr.repo.snapshots(), { last: 2 });
  assert.deepEqual(plan.remove.map((s) => hex(s.id)).sort(), [hex(ids[0]!), hex(ids[1]!)].sort());
  await forgetSnapshots(tr.repo, plan.remove);
  assert.equal((await tr.repo.snapshots()).length, 2);
  const sizeBefore = await repoBytes(tr.dir);

  const dry = await prune(tr.repo, { dryRun: true });
  assert.ok(dry.bytesFreed > 0);
  assert.equal(await repoBytes(tr.dir), sizeBefore, 'dry run deletes nothing');

  const steps: string[] = [];
  const pr = await prune(tr.repo, { onStep: (s) => void steps.push(s) });
  assert.deepEqual(steps, ['dropped', 'repacked', 'index-written', 'repacked-deleted', 'old-index-deleted']);
  assert.ok(pr.packsDeleted + pr.packsRepacked > 0);
  const sizeAfter = await repoBytes(tr.dir);
  assert.ok(sizeAfter < sizeBefore - 200_000, `repository shrank from ${sizeBefore} to ${sizeAfter}`);

  const fresh = await tr.reopen();
  const c = await check(fresh, { readData: true });
  assert.deepEqual(c.problems, []);
  assert.equal(c.unreferencedPacks, 0);
  assert.equal(c.snapshots, 2);
  for (const gen of [2, 3]) {
    const target = await tempDir(t, 'dst');
    await restore(fresh, await fresh.findSnapshot(hex(ids[gen]!)), { target });
    await assertSameTree(copies[gen]!, join(target, 'd'), { dirTimes: false });
  }
  // A second prune has nothing to do.
  const again = await prune(fresh);
  assert.equal(again.packsDeleted + again.packsRepacked, 0);
  // And a backup after prune still deduplicates against what stayed.
  const after = await backup(fresh, { paths: [src] });
  assert.equal(after.snapshot.stats.newChunks, 0);
});

async function repoBytes(root: string): Promise<number> {
  let n = 0;
  const walk = async (p: string) => {
    for (const e of await fs.readdir(p, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(p, e.name));
      else n += (await fs.stat(join(p, e.name))).size;
    }
  };
  await walk(root);
  return n;
}

// --- concurrency and locks -------------------------------------------------------------

test('two backups into one repository at the same time both succeed and both restore', async (t) => {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'src');
  const a = join(base, 'a');
  const b = join(base, 'b');
  // Overlapping content, so both writers race to store the same blobs.
  const shared = prng(1, 200_000);
  await writeTree(a, dir({ 'shared.bin': file(shared), 'own.bin': file(prng(2, 100_000)) }));
  await writeTree(b, dir({ 'shared.bin': file(shared), 'own.bin': file(prng(3, 100_000)) }));
  const repoA = await tr.reopen();
  const repoB = await tr.reopen();
  const [ra, rb] = await Promise.all([backup(repoA, { paths: [a] }), backup(repoB, { paths: [b] })]);
  const fresh = await tr.reopen();
  assert.equal((await fresh.snapshots()).length, 2);
  for (const [r, src] of [[ra, a], [rb, b]] as const) {
    const target = await tempDir(t, 'dst');
    await restore(fresh, await fresh.findSnapshot(hex(r.id)), { target });
    await assertSameTree(src, join(target, src === a ? 'a' : 'b'));
  }
  assert.deepEqual((await check(fresh, { readData: true })).problems, []);
  assert.equal((await fs.readdir(join(tr.dir, 'locks')).catch(() => [])).length, 0, 'locks released');
});

test('prune refuses while a backup holds a lock; backup refuses while prune holds one; stale locks expire', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, sampleTree(3, 20_000));
  await backup(tr.repo, { paths: [src] });

  // A backup in progress (its shared lock) blocks prune, which changes nothing.
  const other = await tr.reopen();
  const shared = await RepositoryLock.acquire(other, false);
  const before = await fs.readdir(join(tr.dir, 'index'));
  await assert.rejects(prune(tr.repo), (e: unknown) => CofferError.is(e, 'locked') && /pid \d+/.test(e.message) && /coffer unlock/.test(e.message));
  assert.deepEqual(await fs.readdir(join(tr.dir, 'index')), before);
  // Shared locks coexist: another backup and a check run alongside.
  await backup(tr.repo, { paths: [src] });
  assert.deepEqual((await check(tr.repo)).problems, []);
  await shared.release();
  await prune(tr.repo);

  // A prune in progress (exclusive) blocks backups, restores and checks.
  const excl = await RepositoryLock.acquire(other, true);
  await assert.rejects(backup(tr.repo, { paths: [src] }), (e: unknown) => CofferError.is(e, 'locked') && /exclusive/.test(e.message));
  const target = await tempDir(t, 'dst');
  await assert.rejects(restore(tr.repo, await tr.repo.findSnapshot('latest'), { target }), (e: unknown) => CofferError.is(e, 'locked'));
  await assert.rejects(check(tr.repo), (e: unknown) => CofferError.is(e, 'locked'));
  assert.equal((await tr.repo.snapshots()).length, 2, 'the refused backup saved nothing');
  assert.equal((await fs.readdir(join(tr.dir, 'locks'))).length, 1, 'refused lockers backed out their own lock');
  await excl.release();

  // A real backup in progress blocks a prune started meanwhile.
  let pruneAttempt: Promise<unknown> | undefined;
  await writeTree(join(src, 'more'), dir({ 'x.bin': file(prng(77, 300_000)) }));
  await backup(tr.repo, {
    paths: [src],
    onProgress: () => {
      pruneAttempt ??= prune(other).then(
        () => 'pruned',
        (e: unknown) => (CofferError.is(e, 'locked') ? 'locked' : e),
      );
    },
  });
  assert.equal(await pruneAttempt, 'locked');

  // A lock written 31 minutes ago by a process that died has expired: nobody waits for it.
  const stale = await RepositoryLock.acquire(other, true, () => Date.now() - 31 * 60 * 1000);
  await backup(tr.repo, { paths: [src] });
  await prune(tr.repo);
  assert.equal(await removeLocks(tr.repo, false), 1, 'unlock removes the expired lock');
  await stale.release(); // already gone: releasing is harmless
  assert.deepEqual(await fs.readdir(join(tr.dir, 'locks')), []);
});

test('a live lock is not removed by unlock without --remove-all', async (t) => {
  const tr = await newRepo(t);
  const lock = await RepositoryLock.acquire(tr.repo, true);
  assert.equal(await removeLocks(tr.repo, false), 0);
  assert.equal(await removeLocks(tr.repo, true), 1);
  await lock.release();
});

test('a second snapshot listing reads only manifests it has not read (issue 13); gone ones are gone; records are frozen', async (t) => {
  const tr = await newRepo(t);
  const src = await tempDir(t, 'memo-src');
  await writeTree(src, sampleTree(7, 5_000));
  for (let i = 0; i < 3; i++) await backup(tr.repo, { paths: [src] });
  // Count manifest reads through a fresh handle on the same storage.
  let reads = 0;
  class Counting extends LocalBackend {
    override get(name: string, range?: ByteRange): Promise<Uint8Array> {
      if (name.startsWith('snapshots/')) reads++;
      return super.get(name, range);
    }
  }
  const repo = await tr.reopen(new Counting(tr.dir));
  const first = await repo.snapshots();
  assert.equal(first.length, 3);
  assert.equal(reads, 3);
  const again = await repo.snapshots();
  assert.equal(reads, 3, 'the second listing read manifests again');
  assert.deepEqual(again.map((s) => hex(s.id)), first.map((s) => hex(s.id)));
  // A new snapshot (written through another handle) is read; a forgotten one is not returned.
  await backup(tr.repo, { paths: [src] });
  await forgetSnapshots(tr.repo, [first[0]!]);
  const third = await repo.snapshots();
  assert.equal(reads, 4);
  assert.deepEqual(third.map((s) => hex(s.id)).slice(0, 2), first.slice(1).map((s) => hex(s.id)));
  assert.equal(third.length, 3);
  // The same record goes to every caller: nobody can change another's.
  assert.throws(() => {
    (third[0]!.snapshot.tags as string[]).push('x');
  }, TypeError);
  assert.throws(() => {
    (third[0]!.snapshot as { hostname: string }).hostname = 'x';
  }, TypeError);
});
