/**
 * The packed in-memory index (issue 13): BlobIndex and IdSet keep blobs in typed arrays,
 * not one object per blob. Checked against a plain Map model: lookups across table
 * growth, IDs that share their leading bytes, duplicate IDs in one pack and in several,
 * preferStored, and index objects read without objects per blob (garbage still refused
 * with the same clear errors).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { backup } from '../src/index.js';
import { ObjectKind } from '../src/crypto/sealed-object.js';
import { CofferError } from '../src/errors.js';
import { BlobType, indexName, type BlobLocation } from '../src/repository/blob.js';
import { BlobIndex, IdSet, decodeIndex, encodeIndex, encodeIndexRecords, encodePackRecord, scanIndex, type IndexedPack } from '../src/repository/index-file.js';
import { PadMode } from '../src/repository/padding.js';
import { bytes } from './helpers.js';
import { newRepo, tempDir } from './fixtures/trees.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function pack(seed: number, ids: Buffer[], firstOffset = 0): IndexedPack {
  return {
    packId: bytes(32, 1_000_000 + seed),
    sealedLength: 1000 + seed,
    blobs: ids.map((id, i) => ({ id, type: i % 3 === 0 ? BlobType.Tree : BlobType.Data, flags: i % 2, offset: firstOffset + i * 10, storedLength: 10, rawLength: i % 2 ? 40 : 10 })),
  };
}

test('BlobIndex: lookups agree with a Map model across table growth', () => {
  const idx = new BlobIndex();
  const model = new Map<string, BlobLocation>();
  const packs: IndexedPack[] = [];
  for (let p = 0; p < 20; p++) packs.push(pack(p, Array.from({ length: 500 }, (_, i) => bytes(32, p * 1000 + i + 1))));
  for (const p of packs) {
    idx.add(p);
    for (const b of p.blobs) model.set(hex(b.id), { packId: p.packId, type: b.type, flags: b.flags, offset: b.offset, storedLength: b.storedLength, rawLength: b.rawLength });
  }
  assert.equal(idx.size, 10_000);
  for (const [k, loc] of model) {
    const id = Buffer.from(k, 'hex');
    assert.deepEqual(idx.get(id), loc);
    assert.ok(idx.has(id));
    assert.deepEqual(idx.locations(id), [loc]);
  }
  for (let i = 0; i < 1000; i++) {
    const absent = bytes(32, 9_000_000 + i);
    assert.equal(idx.get(absent), undefined);
    assert.equal(idx.has(absent), false);
    assert.deepEqual(idx.locations(absent), []);
  }
  assert.equal(idx.has(Buffer.alloc(31)), false, 'a wrong-length ID is simply absent');
  const seen = new Map([...idx.entries()].map(([k, l]) => [Buffer.from(k, 'latin1').toString('hex'), l]));
  assert.deepEqual(seen, model);
  assert.equal(idx.packs.size, 20);
  assert.equal(idx.packs.get(packs[3]!.packId.toString('latin1'))?.sealedLength, 1003);
});

test('BlobIndex and IdSet: IDs that share their first and last bytes still work', () => {
  const ids = Array.from({ length: 3000 }, (_, i) => {
    const b = Buffer.alloc(32, 7);
    b.writeUInt32BE(i, 14); // differ only in the middle: every one hashes alike
    return b;
  });
  const idx = new BlobIndex();
  idx.add(pack(1, ids));
  const set = new IdSet();
  for (const id of ids) assert.equal(set.add(id), true);
  for (const [i, id] of ids.entries()) {
    assert.equal(idx.get(id)?.offset, i * 10);
    assert.equal(set.has(id), true);
    assert.equal(set.add(id), false, 'a second add is refused');
  }
  const other = Buffer.alloc(32, 7);
  other.writeUInt32BE(99_999, 14);
  assert.equal(idx.has(other), false);
  assert.equal(set.has(other), false);
  assert.equal(set.size, 3000);
});

test('BlobIndex: duplicate IDs keep one copy per pack, in order, and preferStored picks a stored one', () => {
  const a = bytes(32, 1);
  const b = bytes(32, 2);
  const c = bytes(32, 3);
  const p1 = pack(1, [a, b, a]); // `a` twice in one pack: the first is kept
  const p2 = pack(2, [a, c], 500);
  const p3 = pack(3, [a, b], 900);
  const idx = new BlobIndex();
  for (const p of [p1, p2, p3]) idx.add(p);
  idx.add(p2); // the same index twice: nothing new
  assert.equal(idx.size, 3);
  assert.deepEqual(idx.locations(a).map((l) => [hex(l.packId), l.offset]), [[hex(p1.packId), 0], [hex(p2.packId), 500], [hex(p3.packId), 900]]);
  assert.equal(idx.locations(b).length, 2);

  // p1 is gone: `a` is read from p2 (then p1, then p3), `b` from p3.
  idx.preferStored((id) => !id.equals(p1.packId));
  assert.deepEqual(idx.locations(a).map((l) => hex(l.packId)), [hex(p2.packId), hex(p1.packId), hex(p3.packId)]);
  assert.equal(hex(idx.get(b)!.packId), hex(p3.packId));
  assert.ok(idx.has(a) && idx.has(b) && idx.has(c));
  assert.equal(idx.size, 3);
  assert.equal([...idx.entries()].length, 3, 'entries: one per blob');

  // p2 and p3 gone as well: `c` has no copy, so `has` is false but `get` names the pack.
  idx.preferStored((id) => id.equals(p1.packId));
  assert.equal(idx.has(c), false);
  assert.equal(hex(idx.get(c)!.packId), hex(p2.packId));
  assert.equal(hex(idx.get(a)!.packId), hex(p1.packId));
  assert.ok(idx.has(a) && idx.has(b));
  // And back: everything stored again clears the mark.
  idx.preferStored(() => true);
  assert.ok(idx.has(c));
});

test('index records: the same bytes as encodeIndex, scanned without objects, decoded back', () => {
  const packs = [pack(1, [bytes(32, 1), bytes(32, 2)]), pack(2, [bytes(32, 3)]), pack(3, [])];
  for (const [v, pad] of [[1, PadMode.Off], [2, PadMode.Auto], [2, PadMode.Max]] as const) {
    const whole = encodeIndex(packs, v, pad);
    assert.deepEqual(encodeIndexRecords(packs.map((p) => encodePackRecord(p.packId, p.sealedLength, p.blobs)), v, pad), whole);
    assert.deepEqual(decodeIndex(whole, 'x'), packs.map((p) => ({ ...p, blobs: p.blobs.map((e) => ({ ...e })) })));
    const scanned = new BlobIndex();
    scanned.addScanned(whole, scanIndex(whole, 'x'));
    const added = new BlobIndex();
    for (const p of packs) added.add(p);
    assert.deepEqual([...scanned.entries()], [...added.entries()]);
  }
});

test('BlobIndex: indexes added as scanned (room made for each at once) agree with the same packs added one by one: small then large ones, duplicates across them', () => {
  const packs: IndexedPack[] = [];
  for (let p = 0; p < 12; p++) packs.push(pack(p, Array.from({ length: p === 0 ? 3 : 200 * p }, (_, i) => bytes(32, (p % 5) * 10_000 + i + 1)), p * 7));
  const scanned = new BlobIndex();
  const added = new BlobIndex();
  for (const group of [packs.slice(0, 1), packs.slice(1, 2), packs.slice(2, 7), packs.slice(7), packs.slice(3, 4)]) {
    const whole = encodeIndex(group, 2, PadMode.Auto);
    scanned.addScanned(whole, scanIndex(whole, 'x'));
    for (const p of group) added.add(p);
  }
  assert.equal(scanned.size, added.size);
  assert.equal(scanned.recordCount, added.recordCount);
  assert.deepEqual([...scanned.entries()], [...added.entries()]);
  for (const p of packs) for (const b of p.blobs) assert.deepEqual(scanned.locations(b.id), added.locations(b.id));
  for (let i = 0; i < 200; i++) assert.equal(scanned.recordOf(bytes(32, 9_000_000 + i)), -1);
});

test('index records: garbage is refused with the same clear errors', () => {
  const good = encodeIndex([pack(1, [bytes(32, 1), bytes(32, 2)])], 2, PadMode.Off);
  const cases: Array<[string, Buffer, RegExp]> = [
    ['bad magic', Buffer.concat([Buffer.from('XXXX'), good.subarray(4)]), /bad magic/],
    ['truncated header', good.subarray(0, 10), /truncated/],
    ['truncated entries', good.subarray(0, good.length - 5), /truncated/],
    ['unknown type', (() => { const b = Buffer.from(good); b[12 + 44 + 32] = 9; return b; })(), /unknown blob type 9/],
    ['unknown flags', (() => { const b = Buffer.from(good); b[12 + 44 + 33] = 0x80; return b; })(), /unknown blob flags/],
    ['pack count too large', (() => { const b = Buffer.from(good); b.writeUInt32BE(5, 8); return b; })(), /truncated/],
    ['non-zero padding', Buffer.concat([good, Buffer.from([0, 1])]), /padding is not zero/],
  ];
  for (const [what, b, msg] of cases) {
    assert.throws(() => scanIndex(b, 'index/abc'), (e: unknown) => e instanceof CofferError && e.code === 'corrupt' && msg.test(e.message) && e.message.includes('index/abc'), what);
    assert.throws(() => decodeIndex(b, 'index/abc'), msg, what);
  }
  const v9 = Buffer.from(good);
  v9[4] = 9;
  assert.throws(() => scanIndex(v9, 'i'), (e: unknown) => CofferError.is(e, 'unsupported-version'));
});

test('a repository whose index object is garbage: skipped with a warning, the backup stores its blobs again', async (t) => {
  const tr = await newRepo(t);
  const src = await tempDir(t, 'src');
  await fs.writeFile(join(src, 'a'), 'alpha '.repeat(100));
  await backup(tr.repo, { paths: [src] });
  const idxNames = (await tr.backend.list('index/')).map((o) => o.name);
  assert.equal(idxNames.length, 1);
  // A sealed object that decrypts fine but holds no valid index.
  await tr.backend.delete(idxNames[0]!);
  await tr.repo.writeObject(ObjectKind.Index, Buffer.from('CFIX\x02\0\0\0\0\0\0\x05', 'latin1'), indexName);
  const repo = await tr.reopen();
  const warnings: string[] = [];
  repo.onWarning = (m) => warnings.push(m);
  assert.equal((await repo.index()).size, 0);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /skipping index\/[0-9a-f]{64} is not a valid index \(truncated\); `coffer repair index`/);
  const again = await backup(repo, { paths: [src], parent: 'none' });
  assert.ok(again.snapshot.stats.newChunks > 0, 'blobs without a readable index are stored again');
});
