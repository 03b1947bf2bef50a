/**
 * Runs of zeros (issue 13: an 8 GiB disk image with 512 MiB of data took 9 s to back up
 * and 9 s to restore, FastCDC and the sparse-restore check rolling over every zero byte
 * in JavaScript). allZero is checked against a byte loop, FastCDC's fast path over zeros
 * against a plain reimplementation of the spec's cut (§6.1) on data full of zero runs,
 * and a backup of such files against its restore, `check --read-data` (every blob's ID
 * recomputed from its bytes, so a wrong cached ID of a zero chunk fails) and a second
 * backup of the same bytes in a file without holes (the same chunks: nothing added).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_CHUNKER, FastCdc, zeroCutOf, type ChunkerParams } from '../src/chunker/fastcdc.js';
import { backup, check, restore } from '../src/index.js';
import { allZero } from '../src/zeros.js';
import { newRepo, tempDir } from './fixtures/trees.js';
import { bytes, prng } from './helpers.js';
import { referenceCut } from './reference-cut.js';

const loopZero = (b: Uint8Array, from: number, to: number) => {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
};

test('allZero agrees with a byte loop: every length around its 64 KiB blocks, one non-zero byte anywhere', () => {
  for (const n of [0, 1, 2, 4095, 65535, 65536, 65537, 131072, 200_003]) {
    const z = Buffer.alloc(n);
    assert.equal(allZero(z), true, `zeros of ${n}`);
    for (const at of new Set([0, 1, n >> 1, 65535, 65536, 65537, n - 2, n - 1].filter((x) => x >= 0 && x < n))) {
      z[at] = 7;
      assert.equal(allZero(z), false, `${n} bytes, non-zero at ${at}`);
      for (const [from, to] of [[0, at], [at, n], [at + 1, n], [Math.max(0, at - 70_000), Math.min(n, at + 70_000)]] as const) {
        assert.equal(allZero(z, from, to), loopZero(z, from, to), `${n} bytes, non-zero at ${at}, range ${from}..${to}`);
      }
      z[at] = 0;
    }
  }
  // A Uint8Array that is not a Buffer, and a view with an offset.
  const u = new Uint8Array(100_000);
  assert.equal(allZero(u, 10, 99_000), true);
  u[50_000] = 1;
  assert.equal(allZero(u.subarray(40_000), 0, 20_000), false);
  assert.equal(allZero(u.subarray(50_001)), true);
});

/** Random bytes and runs of zeros, some with a lone non-zero byte in them. */
function zeroRuns(seed: number, n: number, maxRun: number): Buffer {
  const rnd = prng(seed);
  const out = Buffer.alloc(n);
  for (let at = 0; at < n; ) {
    const len = Math.min(n - at, 1 + Math.floor(rnd() * maxRun));
    const kind = rnd();
    if (kind < 0.35) out.set(bytes(len, seed + at).subarray(0, len), at);
    else if (kind < 0.5) out[at + Math.floor(rnd() * len)] = 1 + Math.floor(rnd() * 255);
    at += len;
  }
  return out;
}

test("FastCDC's cut over zeros lands where the spec's byte-by-byte cut does, whole and streamed, with and without a cut point in zeros", () => {
  const params: ChunkerParams[] = [
    { minSize: 64, avgSize: 1024, maxSize: 4096 },
    { minSize: 2048, avgSize: 8192, maxSize: 32768 },
    { minSize: 1024, avgSize: 1024, maxSize: 1024 },
  ];
  let withZeroCut = 0;
  let withoutZeroCut = 0;
  for (const p of params) {
    // Gear tables until both kinds are seen: zeros that hit a cut point before maxSize, and zeros that do not.
    for (let seed = 1, found = 0; found < 6 && seed < 20_000; seed++) {
      const gb = bytes(1024, seed);
      const z = Buffer.alloc(p.maxSize);
      const zeroCuts = referenceCut(gb, p, z, 0, z.length, false) < p.maxSize;
      if (zeroCuts ? withZeroCut >= 3 * (params.indexOf(p) + 1) : withoutZeroCut >= 3 * (params.indexOf(p) + 1)) continue;
      if (zeroCuts) withZeroCut++;
      else withoutZeroCut++;
      found++;
      const cdc = new FastCdc(gb, p);
      const data = zeroRuns(seed, 40 * p.maxSize, 3 * p.maxSize);
      for (const [start, end] of [[0, data.length], [7, data.length - 3]] as const) {
        for (const eof of [true, false]) {
          // Every start a chunk could have, not only where the previous one ended.
          for (let s = start; s < end; s += Math.max(1, Math.floor(p.minSize / 3))) {
            const e = Math.min(end, s + p.maxSize + 5);
            assert.equal(cdc.cut(data, s, e, eof), referenceCut(gb, p, data, s, e, eof), `seed ${seed}, ${JSON.stringify(p)}, start ${s}, end ${e}, eof ${eof}`);
            const short = Math.min(end, s + p.minSize + Math.floor(p.maxSize / 2));
            assert.equal(cdc.cut(data, s, short, eof), referenceCut(gb, p, data, s, short, eof), `short: seed ${seed}, start ${s}, end ${short}, eof ${eof}`);
          }
        }
      }
      // All zeros, in lengths around the zero cut point and maxSize.
      for (const n of [p.minSize, p.minSize + 1, p.avgSize, p.maxSize - 1, p.maxSize, p.maxSize + 1, 3 * p.maxSize]) {
        const zz = Buffer.alloc(n);
        for (const eof of [true, false]) assert.equal(cdc.cut(zz, 0, n, eof), referenceCut(gb, p, zz, 0, n, eof), `zeros of ${n}, eof ${eof}, seed ${seed}`);
      }
    }
  }
  assert.ok(withZeroCut > 0 && withoutZeroCut > 0, `both kinds of gear table tried (${withZeroCut} with a cut point in zeros, ${withoutZeroCut} without)`);
});

test("where zeros are cut, found in at most 33 steps, is where the spec's loop over every byte to maxSize finds it: every kind of gear value and parameter set", () => {
  const high = (k: number) => (k >= 32 ? -1 : ~((1 << (32 - k)) - 1));
  // The loop as it ran before (and as spec §6.1 runs over zeros): every byte from minSize to maxSize.
  const byteLoop = (g0: number, p: ChunkerParams, maskS: number, maskL: number) => {
    for (let i = p.minSize, h = 0; i < p.maxSize; i++) {
      h = ((h << 1) + g0) | 0;
      if ((h & (i < p.avgSize ? maskS : maskL)) === 0) return i + 1;
    }
    return 0;
  };
  const params: ChunkerParams[] = [
    DEFAULT_CHUNKER,
    { minSize: 64, avgSize: 1024, maxSize: 4096 },
    { minSize: 64, avgSize: 1024, maxSize: 1024 },
    { minSize: 1024, avgSize: 1024, maxSize: 1024 },
    { minSize: 1024, avgSize: 1024, maxSize: 8192 },
    { minSize: 100, avgSize: 128 * 1024, maxSize: 1 << 20 },
  ];
  const seen = { early: 0, atAvg: 0, never: 0 };
  for (const p of params) {
    const bits = Math.log2(p.avgSize);
    const maskS = high(bits + 2);
    const maskL = high(bits - 2);
    // The fixed point is -g0: values whose fixed point passes maskS, only maskL, neither;
    // ones that pass during the first 32 steps only; zero, ±1, extremes; then random ones.
    const g0s = [0, 1, -1, 2, -2, 0x7fffffff, -0x80000000, 0x40000000, -(1 << (32 - bits + 2)), -(1 << (32 - bits - 2)) + 1, -(1 << (32 - bits - 2)), -(1 << (32 - bits + 1)), -(3 << (32 - bits)), 1 << 20, 3 << 28];
    const rnd = prng(bits * 7919 + p.minSize);
    for (let k = 0; k < (p === DEFAULT_CHUNKER ? 20 : 300); k++) g0s.push(rnd() | 0);
    for (const g0 of g0s) {
      const want = byteLoop(g0, p, maskS, maskL);
      assert.equal(zeroCutOf(g0, p, maskS, maskL), want, `g0 ${g0}, ${JSON.stringify(p)}`);
      if (want === 0) seen.never++;
      else if (want === p.avgSize + 1 && p.avgSize > p.minSize) seen.atAvg++;
      else seen.early++;
    }
  }
  assert.ok(seen.early > 0 && seen.atAvg > 0 && seen.never > 0, `every outcome tried: ${JSON.stringify(seen)}`);
});

test('a sparse disk image and the same bytes without holes: same chunks, byte-exact restore with the holes kept, every blob ID verified', async (t) => {
  const tr = await newRepo(t);
  const src = await tempDir(t, 'zeros-src');
  const MiB = 1024 * 1024;
  const size = 40 * MiB;
  const islands = [0, 9 * MiB + 12_345, 23 * MiB + 1, size - 300_000];
  const image = join(src, 'disk.img');
  const fh = await fs.open(image, 'w');
  for (const at of islands) await fh.write(bytes(200_000, at), 0, 200_000, at);
  await fh.truncate(size);
  await fh.close();
  const imgSt = await fs.stat(image);
  const dense = join(src, 'dense.img');
  await fs.writeFile(dense, await fs.readFile(image));

  const r1 = await backup(tr.repo, { paths: [image] });
  const r2 = await backup(tr.repo, { paths: [dense] });
  const chunksOf = async (snap: typeof r1.snapshot) => {
    for await (const e of tr.repo.tree(snap)) if (e.type === 'file') return e;
    throw new Error('no file');
  };
  const [e1, e2] = [await chunksOf(r1.snapshot), await chunksOf(r2.snapshot)];
  assert.deepEqual(e2.chunks, e1.chunks, "the dense copy's chunks are the image's");
  assert.ok(new Set(e1.chunks).size < e1.chunks.length, 'chunks of zeros repeat');
  assert.equal(e1.sparse, imgSt.blocks * 512 < imgSt.size ? true : undefined);
  const checked = await check(tr.repo, { readData: true });
  assert.deepEqual(checked.problems, []);

  const target = await tempDir(t, 'zeros-out');
  await restore(tr.repo, { id: r1.id, snapshot: r1.snapshot }, { target });
  const [restored] = (await fs.readdir(target, { recursive: true })).filter((p) => String(p).endsWith('disk.img'));
  const out = join(target, String(restored));
  assert.ok((await fs.readFile(out)).equals(await fs.readFile(image)), 'byte-exact');
  if (imgSt.blocks * 512 < imgSt.size) {
    const st = await fs.stat(out);
    assert.ok(st.blocks * 512 <= 2 * MiB, `holes kept: ${st.blocks * 512} bytes allocated for ${size}`);
  }
});
