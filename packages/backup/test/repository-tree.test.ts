/**
 * Repository.tree and treeEach on a version 2 listing (issue 13: split into lines as
 * bytes, each line decoded on its own): whatever the cuts between its tree blobs (inside a line, inside a
 * UTF-8 sequence, a line over three blobs), it lists what decodeListing makes of the
 * whole bytes, and refuses what that refuses.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { CofferError, backup, hex, type Snapshot } from '../src/index.js';
import type { Repository } from '../src/repository/repository.js';
import { decodeListing, type TreeEntry } from '../src/repository/tree.js';
import { dir, file, link, newRepo, tempDir, writeTree } from './fixtures/trees.js';

/** `repo` listing a snapshot whose tree blobs are `pieces` (in order), read from memory. */
async function list(repo: Repository, pieces: Buffer[]): Promise<TreeEntry[]> {
  const ids = pieces.map((_, i) => hex(Buffer.alloc(32, i + 1)));
  const byId = new Map(ids.map((id, i) => [id, pieces[i]!]));
  repo.readBlob = async (id: Uint8Array) => byId.get(hex(id))!;
  try {
    const snapshot = { version: 2, tree: ids } as unknown as Snapshot;
    const out: TreeEntry[] = [];
    for await (const e of repo.tree(snapshot)) out.push(e);
    // treeEach (restore's, without a promise per entry) gives the same entries.
    const each: TreeEntry[] = [];
    await repo.treeEach(snapshot, (e) => each.push(e));
    assert.deepEqual(each, out);
    return out;
  } finally {
    delete (repo as Partial<Repository>).readBlob;
  }
}

/** The listing's bytes cut at `cuts` (sorted offsets). */
function cut(bytes: Buffer, cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let from = 0;
  for (const c of [...cuts, bytes.length]) {
    out.push(Buffer.from(bytes.subarray(from, c)));
    from = c;
  }
  return out;
}

test('a version 2 listing cut anywhere between tree blobs lists what its whole bytes hold; a BOM opening it is dropped; bad UTF-8 and a cut-off entry are refused', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, dir({ 'ünïcødé ✓.txt': file('u'), 'plain.txt': file('p'), '日本語': dir({ 'ファイル.txt': file('f') }), 'l': link('plain.txt') }));
  const r = await backup(tr.repo, { paths: [src] });
  const whole = Buffer.concat(await Promise.all(r.snapshot.tree.map((h) => tr.repo.readBlob(Buffer.from(h, 'hex')))));
  const want = decodeListing(whole, 2);
  assert.ok(want.length >= 6);
  assert.deepEqual(await list(tr.repo, [whole]), want);
  // Every single cut, and every pair of cuts a prime step apart (lines over three blobs, empty blobs).
  for (let c = 0; c <= whole.length; c++) assert.deepEqual(await list(tr.repo, cut(whole, [c])), want, `cut at ${c}`);
  for (let a = 0; a <= whole.length; a += 7) {
    for (let b = a; b <= whole.length; b += 13) assert.deepEqual(await list(tr.repo, cut(whole, [a, b])), want, `cuts at ${a}, ${b}`);
  }
  // A byte order mark, even split over blobs, is dropped as the streaming decoder did.
  const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), whole]);
  assert.deepEqual(decodeListing(bom, 2), want);
  for (const c of [0, 1, 2, 3, 4]) assert.deepEqual(await list(tr.repo, cut(bom, [c])), want, `BOM, cut at ${c}`);

  const refused = async (pieces: Buffer[], message: RegExp) =>
    assert.rejects(list(tr.repo, pieces), (e: unknown) => CofferError.is(e, 'corrupt') && message.test((e as Error).message));
  // A lone continuation byte inside a name, and a sequence cut off at the very end.
  const at = whole.indexOf('plain.txt');
  const bad = Buffer.from(whole);
  bad[at] = 0x80;
  await refused([bad], /not valid UTF-8/);
  await refused(cut(bad, [at]), /not valid UTF-8/);
  await refused(cut(bad, [at + 1]), /not valid UTF-8/);
  await refused([whole, Buffer.from([0xe6, 0x97])], /not valid UTF-8/);
  await refused([whole, Buffer.from('{"type":"dir"')], /ends in the middle of an entry/);
  await refused([whole.subarray(0, whole.length - 1)], /ends in the middle of an entry/);
});
