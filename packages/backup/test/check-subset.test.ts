/**
 * `check --read-data-subset` (restic's semantics): group n of m reads a fixed share of
 * the packs, and over n = 1…m every pack exactly once; x% and SIZE read random packs;
 * a damaged pack is found by the subset that holds it, and only by that one.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { HEADER_BYTES, LocalBackend, SEGMENT_BYTES, TAG_BYTES, Repository, backup, check, packName, parseReadDataSubset, selectSubset, type ByteRange, type StorageBackend } from '../src/index.js';
import { dir, file, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';

/** A LocalBackend that records the whole-object reads of packs (what --read-data does). */
class RecordingBackend extends LocalBackend {
  readonly packReads: string[] = [];
  override async get(name: string, range?: ByteRange): Promise<Uint8Array> {
    if (!range && name.startsWith('data/')) this.packReads.push(name);
    return super.get(name, range);
  }
}

/** A repository with `n` packs: one backup each of a small distinct file. */
async function repoWithPacks(t: Parameters<typeof newRepo>[0], n: number) {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  for (let i = 0; i < n; i++) {
    await writeTree(src, dir({ [`f${i}.bin`]: file(prng(100 + i, 200_000)) }));
    await backup(tr.repo, { paths: [src], parent: 'none' });
  }
  const packs = (await tr.backend.list('data/')).map((o) => o.name).sort();
  assert.ok(packs.length >= n, `${packs.length} packs`);
  const rec = new RecordingBackend(tr.dir);
  const repo = await Repository.open(rec, tr.key);
  return { ...tr, repo, rec, packs };
}

test('parseReadDataSubset: n/m, x%, sizes; garbage is a RangeError naming the forms', () => {
  assert.deepEqual(parseReadDataSubset('1/5'), { group: 1, of: 5 });
  assert.deepEqual(parseReadDataSubset('5/5'), { group: 5, of: 5 });
  assert.deepEqual(parseReadDataSubset('10%'), { percent: 10 });
  assert.deepEqual(parseReadDataSubset('2.5%'), { percent: 2.5 });
  assert.deepEqual(parseReadDataSubset('500M'), { bytes: 500 * 1024 ** 2 });
  assert.deepEqual(parseReadDataSubset('1.5GiB'), { bytes: 1.5 * 1024 ** 3 });
  assert.deepEqual(parseReadDataSubset('4096'), { bytes: 4096 });
  for (const bad of ['', '0/5', '6/5', '1/0', '/5', '1/', '0%', '101%', '-1%', '%', '0', '0M', '5X', '1/2/3', 'all', '1e9', ' 1/2']) {
    assert.throws(() => parseReadDataSubset(bad), (e: Error) => e instanceof RangeError && /n\/m, x% or a size/.test(e.message), bad);
  }
});

test('selectSubset: the groups of m partition the packs; percent and size take random packs', () => {
  const packs = Array.from({ length: 200 }, (_, i) => ({ packId: prng(i + 1, 32), sealedLength: 1000 + i }));
  for (const m of [1, 2, 3, 7, 256, 1000]) {
    const seen = new Map<string, number>();
    for (let n = 1; n <= m; n++) for (const p of selectSubset(packs, { group: n, of: m })) seen.set(p.packId.toString('hex'), (seen.get(p.packId.toString('hex')) ?? 0) + 1);
    assert.equal(seen.size, packs.length, `m=${m}: every pack in some group`);
    assert.ok([...seen.values()].every((c) => c === 1), `m=${m}: in exactly one`);
  }
  assert.deepEqual(selectSubset(packs, { group: 2, of: 7 }), selectSubset([...packs].reverse(), { group: 2, of: 7 }), 'deterministic, whatever the order');
  assert.equal(selectSubset(packs, { percent: 10 }).length, 20);
  assert.equal(selectSubset(packs, { percent: 0.1 }).length, 1, 'at least one pack');
  assert.equal(selectSubset(packs, { percent: 100 }).length, 200);
  const bySize = selectSubset(packs, { bytes: 10_500 });
  assert.ok(bySize.reduce((a, p) => a + p.sealedLength, 0) <= 10_500 && bySize.length >= 8, `${bySize.length} packs`);
  assert.equal(selectSubset(packs, { bytes: 1 }).length, 1, 'a size below one pack still reads one');
  const a = selectSubset(packs, { percent: 50 }).map((p) => p.packId.toString('hex'));
  const b = selectSubset(packs, { percent: 50 }).map((p) => p.packId.toString('hex'));
  assert.notDeepEqual(a, b, 'random shares differ between runs');
});

test('check --read-data-subset n/m over n = 1…m reads every pack exactly once, and only then', async (t) => {
  const { repo, rec, packs } = await repoWithPacks(t, 9);
  const m = 3;
  let packsRead = 0;
  for (let n = 1; n <= m; n++) {
    const r = await check(repo, { readDataSubset: { group: n, of: m } });
    assert.deepEqual(r.problems, []);
    packsRead += r.packsRead;
  }
  assert.deepEqual([...rec.packReads].sort(), packs, 'each pack read once over the m groups');
  assert.equal(packsRead, packs.length);
  rec.packReads.length = 0;
  const plain = await check(repo);
  assert.equal(rec.packReads.length, 0, 'without --read-data no pack is read whole');
  assert.equal(plain.packsRead, 0);
  await check(repo, { readDataSubset: { percent: 100 } });
  assert.deepEqual([...rec.packReads].sort(), packs);
});

test('a damaged pack is found by the subset that holds it, and by no other', async (t) => {
  const { repo, dir: repoDir, packs } = await repoWithPacks(t, 8);
  const victim = packs[3]!;
  const path = join(repoDir, victim);
  const bytes = await fs.readFile(path);
  // Damage a segment that holds file data only: tree blobs (read by the structural check
  // too) may come first or last in a pack, whichever finished compressing first.
  const victimKey = victim.split('/').pop()!;
  const treeSegments = new Set<number>();
  const dataSegments = new Set<number>();
  for (const [, b] of (await repo.index()).entries()) {
    if (b.packId.toString('hex') !== victimKey) continue;
    for (let seg = Math.floor(b.offset / SEGMENT_BYTES); seg <= Math.floor((b.offset + b.storedLength - 1) / SEGMENT_BYTES); seg++) (b.type === 0 ? dataSegments : treeSegments).add(seg);
  }
  const seg = [...dataSegments].find((x) => !treeSegments.has(x));
  assert.ok(seg !== undefined, 'a segment with file data only');
  bytes[HEADER_BYTES + seg * (SEGMENT_BYTES + TAG_BYTES) + 10]! ^= 0x01;
  await fs.chmod(path, 0o600).catch(() => {});
  await fs.writeFile(path, bytes);
  const m = 4;
  const victimId = Buffer.from(victim.split('/').pop()!, 'hex');
  const holder = (victimId.readUInt32BE(0) % m) + 1;
  for (let n = 1; n <= m; n++) {
    const r = await check(repo, { readDataSubset: { group: n, of: m } });
    if (n === holder) {
      assert.equal(r.problems.length, 1, JSON.stringify(r.problems));
      assert.match(r.problems[0]!.message, new RegExp(`pack ${victim}: .*failed authentication`));
      assert.ok(r.problems[0]!.snapshots.length >= 1, 'it names the snapshots that need it');
    } else assert.deepEqual(r.problems, [], `group ${n} does not hold it`);
  }
  assert.equal(packName(victimId), victim);
  const plain = await check(repo);
  assert.deepEqual(plain.problems, [], 'a structural check alone does not see flipped bits (that is what reading data is for)');
  const store: StorageBackend = repo.backend;
  assert.ok(store instanceof LocalBackend);
});
