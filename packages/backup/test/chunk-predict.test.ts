/**
 * A changed file's parent chunks in order, with their lengths (`knownLengths`): the worker
 * tries the next parent chunk first, by its keyed hash, and takes it without FastCDC's pass
 * when the bytes are the same (issue 13). The chunks must be exactly FastCDC's, whatever
 * changed: in place, inserted, in a region with a fixed end; and a list that is not the
 * file's parent chunks can never make a chunk that is not the file's bytes.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { BackupKey, DEFAULT_CHUNKER, RepositoryKeys } from '../src/index.js';
import { ChunkPool } from '../src/chunker/chunk-pool.js';
import { FastCdc } from '../src/chunker/fastcdc.js';
import { prng, tempDir } from './fixtures/trees.js';

const MiB = 1 << 20;
type Piece = { id: Buffer; length: number };

// A fixed key: the gear table, so every cut below, is the same in every run; a figure that
// depends on where FastCDC cuts (how soon it finds the parent's cuts again after an
// insertion) is then the same in every run too, and it is checked against `model` anyway.
const keys = new RepositoryKeys(BackupKey.fromBytes(createHash('sha256').update('coffer chunk-predict test key').digest()), Buffer.alloc(16, 1));
const idOf = (b: Uint8Array) => createHmac('sha256', keys.chunkIdKey).update(b).digest();

/** FastCDC over `data[start, end)` in one process: the reference cut. */
function reference(data: Buffer, start = 0, end = data.length): Piece[] {
  const cdc = new FastCdc(keys.gearTable, DEFAULT_CHUNKER);
  const out: Piece[] = [];
  for (let at = start; at < end; ) {
    const n = cdc.cut(data, at, end, true);
    out.push({ id: idOf(data.subarray(at, at + n)), length: n });
    at += n;
  }
  return out;
}

/**
 * How many chunks the worker takes by their parent chunk's hash, for `got` (FastCDC's chunks
 * of a file of `fileLength` bytes, no fixed end) against `parent`: the rule of chunk-worker.ts
 * played over the chunks, independently of where FastCDC happened to cut. The next parent
 * chunk is tried at each chunk's start unless the place is lost, and never the parent's last
 * (it ended with its file) or one longer than what is left; a chunk found by its ID puts the
 * next try after it; a new chunk where one was tried moves on if it has the tried length
 * (a change in place) and loses the place if not (an insertion or removal).
 */
function model(fileLength: number, parent: Piece[], got: Piece[]): number {
  const first = new Map<string, number>();
  parent.forEach((p, k) => first.has(p.id.toString('hex')) || first.set(p.id.toString('hex'), k));
  let next = 0;
  let lost = false;
  let predicted = 0;
  let at = 0;
  for (const c of got) {
    const tried = !lost && next < parent.length - 1 && parent[next]!.length <= fileLength - at ? parent[next]! : undefined;
    const seen = first.get(c.id.toString('hex'));
    if (tried?.id.equals(c.id)) {
      predicted++;
      next++;
    } else if (seen !== undefined) {
      next = next < parent.length && parent[next]!.id.equals(c.id) ? next + 1 : seen + 1;
      lost = false;
    } else if (tried) {
      if (c.length === tried.length) next++;
      else lost = true;
    }
    at += c.length;
  }
  return predicted;
}

/** Of `got`, the chunks that are one of `parent`'s, the last one left out (it is never taken by its hash here). */
const foundAgain = (parent: Piece[], got: Piece[]) => {
  const ids = new Set(parent.map((p) => p.id.toString('hex')));
  return got.slice(0, -1).filter((p) => ids.has(p.id.toString('hex'))).length;
};

const known = (pieces: Piece[]) => ({ known: Buffer.concat(pieces.map((p) => p.id)), knownLengths: Uint32Array.from(pieces.map((p) => p.length)) });

async function setup(t: TestContext) {
  const dir = await tempDir(t, 'predict');
  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER), 2);
  t.after(() => pool.close());
  /** Chunks `data` (written to a file) through the pool; each chunk's ID and length in the order they came. */
  const chunk = async (data: Buffer, opts: { start?: number; end?: number; known?: Uint8Array; knownLengths?: Uint32Array } = {}) => {
    const file = join(dir, 'f');
    await fs.writeFile(file, data);
    const pieces: Piece[] = [];
    const r = await pool.chunkFile(file, async (id, bytes) => void pieces.push({ id, length: bytes.length }), { ...opts, onKnown: (id, length) => void pieces.push({ id, length }) });
    assert.deepEqual(r.ids, pieces.map((p) => p.id));
    return { pieces, predicted: r.predicted };
  };
  return { chunk };
}

test('an unchanged file: every parent chunk but the last is taken by its hash alone, and the chunks are FastCDC\'s', async (t) => {
  const { chunk } = await setup(t);
  const parent = prng(1, 24 * MiB);
  const want = reference(parent);
  assert.ok(want.length > 20);
  const got = await chunk(parent, known(want));
  assert.deepEqual(got.pieces, want);
  // The last chunk ended at the file's end, not by its content: cut as before.
  assert.equal(got.predicted, want.length - 1);
  // Without lengths (or without a parent), nothing is taken that way, and the chunks are the same.
  const plain = await chunk(parent, { known: known(want).known });
  assert.deepEqual(plain.pieces, want);
  assert.equal(plain.predicted, 0);
});

test('changes in place and an insertion: the chunks are still exactly FastCDC\'s, the unchanged ones taken by their hash', async (t) => {
  const { chunk } = await setup(t);
  const parent = prng(2, 24 * MiB);
  const chunks = reference(parent);
  const before = known(chunks);

  const inPlace = Buffer.from(parent);
  inPlace.fill(7, 9 * MiB, 9 * MiB + 100);
  inPlace.fill(9, 15 * MiB, 15 * MiB + 3000);
  const a = await chunk(inPlace, before);
  const wantA = reference(inPlace);
  assert.deepEqual(a.pieces, wantA);
  assert.equal(a.predicted, model(inPlace.length, chunks, wantA));
  // Every chunk found again but those right after a place lost (at most one per change).
  assert.ok(a.predicted >= foundAgain(chunks, wantA) - 2, `${a.predicted} of ${wantA.length}`);
  assert.ok(a.predicted >= wantA.length - 1 - 6, `${a.predicted} of ${wantA.length}`);

  // One parent chunk changed in its middle: only it is cut and hashed anew; the next is tried
  // (and taken) at once, not after another parent chunk is found again by its ID.
  let mid = 0;
  for (let k = 0; k < 5; k++) mid += chunks[k]!.length;
  mid += chunks[5]!.length >> 1;
  const one = Buffer.from(parent);
  one[mid] = one[mid]! ^ 0xff;
  const o = await chunk(one, before);
  assert.deepEqual(o.pieces, reference(one));
  assert.equal(o.predicted, model(one.length, chunks, reference(one)));
  assert.equal(o.predicted, chunks.length - 2, 'every chunk but the changed one and the last');
  // Every parent chunk changed in place: none taken, and the chunks still FastCDC's.
  const every = Buffer.from(parent);
  let off = 0;
  for (const c of chunks) {
    const m = off + (c.length >> 1);
    every[m] = every[m]! ^ 0xff;
    off += c.length;
  }
  const e = await chunk(every, before);
  assert.deepEqual(e.pieces, reference(every));
  assert.equal(e.predicted, 0);

  const inserted = Buffer.concat([parent.subarray(0, 3 * MiB), prng(3, 5000), parent.subarray(3 * MiB)]);
  const b = await chunk(inserted, before);
  const wantB = reference(inserted);
  assert.deepEqual(b.pieces, wantB);
  assert.equal(b.predicted, model(inserted.length, chunks, wantB));
  // After the insertion's new chunks, the first one found again by its ID, then the rest by their hash.
  assert.equal(b.predicted, foundAgain(chunks, wantB) - 1, `${b.predicted} of ${wantB.length}: found again after the insertion`);
  assert.ok(b.predicted >= wantB.length - 1 - 4, `${b.predicted} of ${wantB.length}: found again after the insertion`);

  // Grown at its end: the parent's last chunk had ended with the file, so it is cut anew.
  const grown = Buffer.concat([parent, prng(4, 3 * MiB)]);
  const g = await chunk(grown, before);
  const wantG = reference(grown);
  assert.deepEqual(g.pieces, wantG);
  assert.equal(g.predicted, before.knownLengths.length - 1);

  const cut = Buffer.concat([parent.subarray(0, 5 * MiB), parent.subarray(5 * MiB + 777_777)]);
  const c = await chunk(cut, before);
  assert.deepEqual(c.pieces, reference(cut));
  assert.equal(c.predicted, model(cut.length, chunks, reference(cut)));
  assert.ok(c.predicted > 0);
});

test('repeated chunks (runs of zeros between a few islands of data): still FastCDC\'s chunks, in order', async (t) => {
  const { chunk } = await setup(t);
  const parent = Buffer.alloc(20 * MiB);
  for (const at of [1, 7, 13]) prng(10 + at, 300_000).copy(parent, at * MiB);
  const want = reference(parent);
  assert.ok(new Set(want.map((p) => p.id.toString('hex'))).size < want.length, 'the zeros make chunks that repeat');
  const same = await chunk(parent, known(want));
  assert.deepEqual(same.pieces, want);
  assert.equal(same.predicted, want.length - 1);
  const changed = Buffer.from(parent);
  prng(99, 1000).copy(changed, 7 * MiB + 100_000);
  const c = await chunk(changed, known(want));
  assert.deepEqual(c.pieces, reference(changed));
  const moved = Buffer.concat([Buffer.alloc(4096), parent.subarray(0, 15 * MiB)]);
  const m = await chunk(moved, known(want));
  assert.deepEqual(m.pieces, reference(moved));
});

test('a region with a fixed end: its last parent chunk, ended by the region, is taken too; the next region starts afresh', async (t) => {
  const { chunk } = await setup(t);
  const data = prng(4, 20 * MiB);
  const R = 10 * MiB + 12345;
  const r0 = reference(data, 0, R);
  const r1 = reference(data, R);
  const g0 = await chunk(data, { start: 0, end: R, ...known(r0) });
  assert.deepEqual(g0.pieces, r0);
  assert.equal(g0.predicted, r0.length, 'every chunk, the last one cut at the region\'s end included');
  const g1 = await chunk(data, { start: R, ...known(r1) });
  assert.deepEqual(g1.pieces, r1);
  assert.equal(g1.predicted, r1.length - 1);
  // The region's last chunk is not taken when the region now ends elsewhere (the file shrank into it).
  const shrunk = data.subarray(0, R - 100_000);
  const g2 = await chunk(shrunk, { start: 0, end: R, ...known(r0) });
  assert.deepEqual(g2.pieces, reference(shrunk, 0, shrunk.length));
});

test('a list that is not the parent\'s chunks never yields a chunk that is not the file\'s bytes', async (t) => {
  const { chunk } = await setup(t);
  const data = prng(5, 12 * MiB);
  const want = reference(data);
  // Wrong lengths for the right IDs: nothing matches, FastCDC cuts every chunk.
  const wrong = known(want);
  for (let k = 0; k < wrong.knownLengths.length; k++) wrong.knownLengths[k] = wrong.knownLengths[k]! + 1;
  const a = await chunk(data, wrong);
  assert.deepEqual(a.pieces, want);
  assert.equal(a.predicted, 0);
  // IDs of other bytes: nothing matches.
  const other = known(reference(prng(6, 12 * MiB)));
  const b = await chunk(data, other);
  assert.deepEqual(b.pieces, want);
  assert.equal(b.predicted, 0);
  // Lengths longer than the file, or zero: skipped.
  const c = await chunk(data, { known: Buffer.concat([want[0]!.id, want[1]!.id]), knownLengths: Uint32Array.from([0, 0xffffffff]) });
  assert.deepEqual(c.pieces, want);
  // Pieces cut elsewhere (another writer's boundaries: 1 MiB each) with their true IDs: taken where the
  // bytes are the same; every chunk is still the file's bytes at its place, in order.
  const fixed: Piece[] = [];
  for (let at = 0; at < data.length; at += MiB) fixed.push({ id: idOf(data.subarray(at, at + MiB)), length: Math.min(MiB, data.length - at) });
  const d = await chunk(data, known(fixed));
  let at = 0;
  for (const p of d.pieces) {
    assert.deepEqual(p.id, idOf(data.subarray(at, at + p.length)));
    at += p.length;
  }
  assert.equal(at, data.length);
  assert.equal(d.predicted, fixed.length - 1);
});
