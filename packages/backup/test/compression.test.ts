/**
 * `--compression auto|off|max` (spec §7.2): each mode round-trips, `off` stores every
 * blob raw, `max` stores compressible data smaller than `auto`, and every frame written
 * stays within what spec §7.2 lets readers refuse (one frame, window ≤ 8 MiB).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { BackupKey, CofferError, Compression, LocalBackend, Repository, backup, check, parseCompressionMode, restore, type CompressionMode } from '../src/index.js';
import { BLOB_COMPRESSED } from '../src/repository/blob.js';
import { RANDOM_CHECK_FROM, RANDOM_PROBE_BYTES, RANDOM_SAMPLE_BELOW, RANDOM_SAMPLE_FROM, RANDOM_SAMPLE_WINDOW, RANDOM_SAMPLE_WINDOWS, decompressBlob, decompressBlobHere, looksRandom, maybeCompress, maybeCompressInto, randomCheck, zstdBound, zstdFrameEnd } from '../src/repository/compress.js';
import { SMALL_CHUNKER, assertSameTree, dir, file, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';

/** Compressible but not trivially so: words drawn from a small vocabulary by a PRNG. */
function prose(bytes: number, seed: number): string {
  const words = ['coffer', 'backup', 'key', 'vault', 'snapshot', 'pack', 'index', 'tree', 'chunk', 'restore', 'relay', 'zstd', 'segment', 'blob'];
  const r = prng(seed, bytes);
  let s = '';
  for (let i = 0; s.length < bytes; i++) s += words[r[i % r.length]! % words.length] + (r[(i * 7) % r.length]! % 11 === 0 ? '.\n' : ' ');
  return s.slice(0, bytes);
}

async function packBytes(repo: Repository): Promise<number> {
  let n = 0;
  for (const o of await repo.backend.list('data/')) n += o.size;
  return n;
}

const tree = () =>
  dir({
    'prose.txt': file(prose(400_000, 1)),
    'more.md': file(prose(120_000, 2)),
    'random.bin': file(prng(3, 60_000)),
    sub: dir({ 'tiny.txt': file('x') }),
  });

test('maybeCompressInto (small files and large chunks), on a chunk worker with a reused context, decides as maybeCompress does, and writes one frame the reader takes', async () => {
  /** The largest small file a chunk worker compresses in a batch (a small file's whole content at most). */
  const SMALL_MAX = 256 * 1024;
  const inputs: Buffer[] = [
    Buffer.alloc(0),
    Buffer.from('x'.repeat(63)), // under 64 bytes: raw
    Buffer.from(prose(3000, 7)),
    Buffer.from(prose(SMALL_MAX, 8)), // 4 × the sample: sampled first
    Buffer.from(prng(9, 3000)), // random-looking: raw (auto), tried (max)
    Buffer.from(prng(10, SMALL_MAX)), // sampled, does not shrink: raw
    Buffer.concat([Buffer.from(prose(1000, 11)), Buffer.from(prng(12, 1000))]),
  ];
  // Large chunks, for maybeCompressInto: compressible; random (its first 64 KiB look random:
  // no zstd call); random first 64 KiB and compressible after (raw: judged by the sample);
  // compressible first 64 KiB and random after (tried whole, does not shrink: raw).
  const large: Buffer[] = [
    Buffer.from(prose(1 << 20, 13)),
    Buffer.from(prng(14, 600_000)),
    Buffer.concat([Buffer.from(prng(15, 64 * 1024)), Buffer.from(prose(400_000, 16))]),
    Buffer.concat([Buffer.from(prose(64 * 1024, 17)), Buffer.from(prng(18, 2_500_000))]),
  ];
  const scratch = Buffer.alloc(zstdBound(Math.max(...large.map((x) => x.length))));
  for (const mode of ['auto', 'max', 'off'] as const) {
    // Twice over: the second pass reuses the thread's context.
    for (let pass = 0; pass < 2; pass++) {
      for (const raw of inputs) {
        const a = await maybeCompress(raw, mode);
        const b = maybeCompressInto(raw, mode, scratch);
        assert.equal(b.flags, a.flags, `${mode}, ${raw.length} bytes: same decision`);
        if (b.flags & BLOB_COMPRESSED) {
          assert.equal(zstdFrameEnd(b.stored), b.stored.length, 'exactly one frame');
          assert.equal(b.stored[4], 0, 'no content size, no checksum (frame header descriptor 0x00, spec §7.2)');
          assert.ok(b.stored.length <= raw.length - raw.length / 32);
        } else assert.ok(b.stored.equals(raw));
        assert.ok((await decompressBlob(b.stored, b.flags, raw.length, 'test')).equals(raw), 'the reader gets the bytes back');
      }
    }
  }
  assert.throws(() => maybeCompressInto(Buffer.from(prng(19, 4096)), 'max', Buffer.alloc(64)), /zstd/, 'a scratch buffer under zstdBound is refused, not overrun');
  for (const mode of ['auto', 'max', 'off'] as const) {
    for (const raw of [...inputs, ...large]) {
      const a = await maybeCompress(raw, mode);
      const b = maybeCompressInto(raw, mode, scratch);
      assert.equal(b.flags, a.flags, `into, ${mode}, ${raw.length} bytes: same decision`);
      // (Not byte for byte the thread pool's frame: the two bindings bundle different libzstd builds.)
      if (b.flags & BLOB_COMPRESSED) {
        assert.equal(zstdFrameEnd(b.stored), b.stored.length, 'exactly one frame');
        assert.equal(b.stored[4], 0, 'frame header descriptor 0x00');
        assert.ok(10 + (b.stored[5]! >> 3) <= 23, 'window at most 8 MiB');
      }
      else assert.ok(b.stored.equals(raw));
      assert.ok((await decompressBlob(Buffer.from(b.stored), b.flags, raw.length, 'test')).equals(raw));
      assert.ok(decompressBlobHere(Buffer.from(b.stored), b.flags, raw.length, 'test').equals(raw));
    }
  }
  const auto = await Promise.all(large.map((raw) => maybeCompress(raw, 'auto')));
  assert.deepEqual(auto.map((x) => (x.flags & BLOB_COMPRESSED) !== 0), [true, false, false, false], 'auto: only the compressible chunk is stored compressed');
});

test('parseCompressionMode: auto, off, max; anything else is a RangeError naming the choices', () => {
  for (const m of ['auto', 'off', 'max']) assert.equal(parseCompressionMode(m), m);
  for (const bad of ['', 'AUTO', 'zstd', 'on', '19', 'max ']) assert.throws(() => parseCompressionMode(bad), (e: Error) => e instanceof RangeError && /auto, off, max/.test(e.message));
});

test('each mode round-trips, check --read-data passes, and off > auto > max in stored bytes on compressible data', async (t) => {
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, tree());
  const sizes: Partial<Record<CompressionMode, number>> = {};
  for (const mode of ['off', 'auto', 'max'] as const) {
    const tr = await newRepo(t, { minSize: 64 * 1024, avgSize: 128 * 1024, maxSize: 512 * 1024 });
    const r = await backup(tr.repo, { paths: [src], compression: mode });
    sizes[mode] = await packBytes(tr.repo);
    const idx = await tr.repo.index();
    const flags = [...idx.entries()].map(([, b]) => b.flags & BLOB_COMPRESSED);
    if (mode === 'off') assert.ok(flags.every((f) => f === 0), 'off: no blob is compressed');
    else assert.ok(flags.some((f) => f !== 0), `${mode}: the prose is stored compressed`);
    const out = await tempDir(t, `out-${mode}`);
    const reopened = await tr.reopen();
    await restore(reopened, { id: r.id, snapshot: r.snapshot }, { target: out });
    await assertSameTree(src, join(out, 'data'));
    const c = await check(reopened, { readData: true });
    assert.deepEqual(c.problems, [], mode);
  }
  assert.ok(sizes.off! > sizes.auto!, `off (${sizes.off}) stores more than auto (${sizes.auto})`);
  assert.ok(sizes.auto! > sizes.max!, `auto (${sizes.auto}) stores more than max (${sizes.max})`);
  // The raw data is > 580 kB; off stores at least that much (sealed, padded).
  assert.ok(sizes.off! >= 580_000);
});

test("a repository made with compression none backs up raw by default; --compression on the backup overrides the config's default", async (t) => {
  const dirPath = await tempDir(t, 'repo');
  const key = BackupKey.generate();
  const repo = await Repository.init(new LocalBackend(dirPath), key, { chunker: SMALL_CHUNKER, compression: Compression.None });
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, dir({ 'a.txt': file(prose(50_000, 9)) }));
  await backup(repo, { paths: [src] });
  const compressedBlobs = async () => [...(await repo.index()).entries()].filter(([, b]) => (b.flags & BLOB_COMPRESSED) !== 0).length;
  assert.equal(await compressedBlobs(), 0, 'config none: nothing compressed');
  await writeTree(join(src, 'b'), file(prose(50_000, 10)));
  repo.invalidateIndex();
  await backup(repo, { paths: [src], compression: 'auto' });
  repo.invalidateIndex();
  assert.ok((await compressedBlobs()) > 0, 'an explicit auto compresses');
  const reopened = await Repository.open(new LocalBackend(dirPath), key);
  assert.equal(reopened.config.compression, Compression.None, 'the default stays in the config');
});

test('max writes one zstd frame with a window of at most 8 MiB (spec §7.2), and never stores an incompressible chunk compressed', async () => {
  const text = Buffer.from(prose(1 << 20, 4));
  for (const mode of ['auto', 'max'] as const) {
    const { stored, flags } = await maybeCompress(text, mode);
    assert.equal(flags & BLOB_COMPRESSED, BLOB_COMPRESSED);
    assert.equal(zstdFrameEnd(stored), stored.length, 'exactly one frame');
    assert.equal(stored[4], 0, 'no content size, no checksum (frame header descriptor 0x00)');
    const windowLog = 10 + (stored[5]! >> 3);
    assert.ok(windowLog <= 23, `${mode}: window 2^${windowLog}`);
  }
  const a = await maybeCompress(text, 'auto');
  const m = await maybeCompress(text, 'max');
  assert.ok(m.stored.length < a.stored.length, `max (${m.stored.length}) < auto (${a.stored.length}): the level reaches the library`);
  const noise = prng(5, 300_000);
  for (const mode of ['off', 'auto', 'max'] as const) assert.deepEqual(await maybeCompress(noise, mode), { stored: noise, flags: 0 });
  assert.deepEqual(await maybeCompress(text, 'off'), { stored: text, flags: 0 });
});

test('auto stores small random-looking chunks raw without trying zstd; text of every size, and max, still compress', async () => {
  // Random bytes of every size from the check's lower bound up: all look random.
  for (const n of [RANDOM_CHECK_FROM, 600, 1000, 4096, 65_536, 262_143]) {
    for (let seed = 1; seed <= 20; seed++) assert.ok(looksRandom(prng(seed * 1000 + n, n)), `random ${n} bytes (seed ${seed})`);
  }
  // Text, source code, structured binary (a sparse table, little-endian counters): none do.
  const table = Buffer.alloc(8192);
  for (let i = 0; i < 2048; i++) table.writeUInt32LE(i * 7, i * 4);
  const samples = [Buffer.from(prose(600, 1)), Buffer.from(prose(200_000, 2)), Buffer.from('function f(x) { return x + 1; }\n'.repeat(40)), table, Buffer.from(prng(3, 1024).toString('base64'))];
  for (const s of samples) {
    assert.equal(looksRandom(s), false, `${s.length} bytes of structured data`);
    const { flags } = await maybeCompress(s, 'auto');
    assert.equal(flags & BLOB_COMPRESSED, BLOB_COMPRESSED, `${s.length} bytes compress under auto`);
  }
  // A random block written twice looks random but compresses: auto skips it (the
  // trade, spec §7.2), max still finds it.
  const twice = Buffer.concat([prng(9, 2048), prng(9, 2048)]);
  assert.deepEqual(await maybeCompress(twice, 'auto'), { stored: twice, flags: 0 });
  assert.equal((await maybeCompress(twice, 'max')).flags & BLOB_COMPRESSED, BLOB_COMPRESSED);
});

/** The definition looksRandom must match: byte entropy near 8 bits (one histogram, one byte at a time). */
const plainLooksRandom = (b: Uint8Array): boolean => {
  const h = new Array<number>(256).fill(0);
  for (const x of b) h[x]!++;
  let e = 0;
  for (const c of h) if (c !== 0) e -= c * Math.log2(c / b.length);
  return e / b.length >= 8 - (3 * 255) / (2 * b.length * Math.LN2) - 0.02;
};

test('looksRandom counts bytes four at a time and decides exactly as the plain entropy definition, at every length and alignment', () => {
  const pool = Buffer.concat([prng(11, 5000), Buffer.from(prose(5000, 4)), prng(12, 3000)]);
  let randomSeen = 0;
  let otherSeen = 0;
  for (let n = 0; n <= 1030; n += n < 20 ? 1 : 37) {
    for (let off = 0; off < 4; off++) {
      for (const start of [0, 5000, 9000, 10_000 - n]) {
        const v = pool.subarray(start + off, start + off + n);
        const want = plainLooksRandom(v);
        assert.equal(looksRandom(v), want, `${n} bytes at ${start + off}`);
        if (want) randomSeen++;
        else otherSeen++;
      }
    }
  }
  assert.ok(randomSeen > 50 && otherSeen > 50, `both outcomes checked (${randomSeen} random, ${otherSeen} not)`);
});

test('looksRandom decides nearly uniform counts without their logarithms, as the entropy definition does, on both sides of the bound', () => {
  const pearson = (b: Uint8Array): number => {
    const h = new Array<number>(256).fill(0);
    for (const x of b) h[x]!++;
    return (256 * h.reduce((s, c) => s + c * c, 0)) / b.length - b.length;
  };
  // Blobs whose counts drift from exactly uniform, one byte changed at a time, through
  // Pearson's statistic 380 (the shortcut's bound) and on until the definition says no;
  // the smallest sizes checked are where the bound is closest to the definition's.
  const r = prng(61, 1 << 16);
  let nearBound = 0;
  for (const n of [RANDOM_CHECK_FROM, 513, 768, 1024, 4096]) {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = i & 255;
    for (let step = 0, j = 0; plainLooksRandom(b) && step < 20 * n; step++, j += 3) {
      b[((r[j % r.length]! << 8) | r[(j + 1) % r.length]!) % n] = r[(j + 2) % r.length]! & 63;
      const x = pearson(b);
      if (x > 340 && x <= 380) nearBound++;
      assert.equal(looksRandom(b), plainLooksRandom(b), `${n} bytes, Pearson's statistic ${x.toFixed(1)}`);
    }
    assert.equal(plainLooksRandom(b), false, `${n} bytes: drifted until not random`);
  }
  assert.ok(nearBound > 20, `blobs just under the bound checked (${nearBound})`);
});

test('randomCheck takes a blob whose sample windows are nearly uniform as random without the full count; text in its windows sends it to the full count', async () => {
  // Random bytes of every size from the sample's on: all random (93% by the sample alone).
  for (const n of [RANDOM_SAMPLE_FROM, 3000, 8192, RANDOM_SAMPLE_BELOW - 1, RANDOM_SAMPLE_BELOW, 262_143]) {
    for (let seed = 1; seed <= 20; seed++) assert.ok(randomCheck(prng(seed * 104_729 + n, n)), `random ${n} bytes (seed ${seed})`);
  }
  // Random in every window (and in the probe's middle bytes), text between them: the
  // full count says not random, the sample random: stored raw without trying zstd (the
  // trade, spec §7.2; on this machine's files no blob was decided otherwise than by the full count).
  const n = 8192;
  const width = Math.max(RANDOM_SAMPLE_WINDOW, Math.floor(n / (8 * RANDOM_SAMPLE_WINDOWS)));
  const step = (n - width) / (RANDOM_SAMPLE_WINDOWS - 1);
  const gaps = Buffer.from(prng(62, n));
  const text = Buffer.from(prose(n, 11));
  const middle = [(n - RANDOM_PROBE_BYTES) >> 1, (n + RANDOM_PROBE_BYTES) >> 1];
  for (let w = 0; w + 1 < RANDOM_SAMPLE_WINDOWS; w++) {
    const from = Math.floor(w * step) + width;
    const to = Math.floor((w + 1) * step);
    if (to > middle[0]! && from < middle[1]!) continue;
    text.copy(gaps, from, from, to);
  }
  assert.equal(looksRandom(gaps), false, 'text between the windows: the full count says not random');
  assert.equal(randomCheck(gaps), true, 'random windows: the sample says random');
  assert.deepEqual(await maybeCompress(gaps, 'auto'), { stored: gaps, flags: 0 });
  // The same blob with text in two of its windows: not uniform, counted in full, not random.
  const twoWindows = Buffer.from(gaps);
  for (const w of [3, 12]) text.copy(twoWindows, Math.floor(w * step), 0, width);
  assert.equal(randomCheck(twoWindows), false, 'text in two windows: counted in full');
  assert.equal((await maybeCompress(twoWindows, 'auto')).flags & BLOB_COMPRESSED, BLOB_COMPRESSED);
  // A random blob with a text header of one window (64 bytes): counted in full, which says random.
  const header = Buffer.concat([Buffer.from(prose(RANDOM_SAMPLE_WINDOW, 12)), prng(63, n - RANDOM_SAMPLE_WINDOW)]);
  assert.equal(randomCheck(header), looksRandom(header));
  // From RANDOM_SAMPLE_BELOW on (a large chunk's 64 KiB look) no sample: the same layout
  // (random windows, text between) is counted in full and is not random.
  const big = RANDOM_SAMPLE_BELOW;
  const bigWidth = Math.max(RANDOM_SAMPLE_WINDOW, Math.floor(big / (8 * RANDOM_SAMPLE_WINDOWS)));
  const bigStep = (big - bigWidth) / (RANDOM_SAMPLE_WINDOWS - 1);
  const bigGaps = Buffer.from(prng(64, big));
  const bigText = Buffer.from(prose(big, 13));
  for (let w = 0; w + 1 < RANDOM_SAMPLE_WINDOWS; w++) {
    const from = Math.floor(w * bigStep) + bigWidth;
    const to = Math.floor((w + 1) * bigStep);
    if (to > (big - RANDOM_PROBE_BYTES) >> 1 && from < (big + RANDOM_PROBE_BYTES) >> 1) continue;
    bigText.copy(bigGaps, from, from, to);
  }
  assert.equal(randomCheck(bigGaps), false, `${big} bytes: counted in full`);
  assert.equal(randomCheck(bigGaps.subarray(0, big - 1)), true, `${big - 1} bytes: sampled`);
});

test('randomCheck decides as looksRandom, but a blob whose middle bytes are few distinct values is not random without being counted in full', async () => {
  // Random bytes of every size: the probe never stops them, so they are decided by the full count.
  for (const n of [RANDOM_CHECK_FROM, 2 * RANDOM_PROBE_BYTES, 2 * RANDOM_PROBE_BYTES + 1, 1000, 4096, 65_536, 262_143]) {
    for (let seed = 1; seed <= 50; seed++) assert.ok(randomCheck(prng(seed * 7919 + n, n)), `random ${n} bytes (seed ${seed})`);
  }
  // Text and other structured data: not random either way.
  for (const s of [Buffer.from(prose(600, 1)), Buffer.from(prose(200_000, 2)), Buffer.from(prng(3, 1024).toString('base64'))]) {
    assert.equal(randomCheck(s), false, `${s.length} bytes of text`);
  }
  // Random bytes with text in the middle: the full count says random, the probe (the
  // middle RANDOM_PROBE_BYTES) says not, and zstd is tried; stored raw all the same.
  const half = prng(31, 8192);
  const mixed = Buffer.concat([half, Buffer.from(prose(RANDOM_PROBE_BYTES, 5)), prng(32, 8192)]);
  assert.equal(looksRandom(mixed), true);
  assert.equal(randomCheck(mixed), false);
  assert.deepEqual(await maybeCompress(mixed, 'auto'), { stored: mixed, flags: 0 });
  // Text with random bytes in the middle: the probe lets it through to the full count, which says not random.
  const textAround = Buffer.concat([Buffer.from(prose(20_000, 6)), prng(33, RANDOM_PROBE_BYTES * 4), Buffer.from(prose(20_000, 7))]);
  assert.equal(randomCheck(textAround), false);
  assert.equal((await maybeCompress(textAround, 'auto')).flags & BLOB_COMPRESSED, BLOB_COMPRESSED);
  // At most 2 × RANDOM_PROBE_BYTES there is no probe: looksRandom alone.
  const small = Buffer.concat([prng(34, RANDOM_PROBE_BYTES - 64), Buffer.from(prose(128, 8)), prng(35, RANDOM_PROBE_BYTES - 64)]);
  assert.equal(randomCheck(small), looksRandom(small));
});

test('a large chunk whose sample holds few distinct values in its middle is compressed without the zstd sample', async () => {
  // The first 64 KiB (the sample) random but for 1 KiB of text in their middle, then text:
  // the sample alone would not shrink by 1/32, and decided the chunk raw; without it zstd
  // runs on the whole chunk, which shrinks.
  const sample = prng(41, 64 * 1024);
  Buffer.from(prose(1024, 9)).copy(sample, 32 * 1024 - 512);
  const chunk = Buffer.concat([sample, Buffer.from(prose(448 * 1024, 10))]);
  const scratch = Buffer.allocUnsafe(zstdBound(chunk.length));
  for (const got of [await maybeCompress(chunk, 'auto'), maybeCompressInto(chunk, 'auto', scratch)]) {
    assert.equal(got.flags & BLOB_COMPRESSED, BLOB_COMPRESSED);
    assert.ok(got.stored.length < chunk.length * 0.8, `${got.stored.length} of ${chunk.length} bytes`);
  }
  // Random throughout but that same middle: zstd runs, does not shrink it, and it is stored raw.
  const noise = prng(42, 512 * 1024);
  Buffer.from(prose(1024, 9)).copy(noise, 32 * 1024 - 512);
  assert.deepEqual(await maybeCompress(noise, 'auto'), { stored: noise, flags: 0 });
  assert.equal(maybeCompressInto(noise, 'auto', scratch).stored, noise);
});

test('decompressing a blob into its raw length (decompressBlobHere): a frame that decodes to more or to fewer bytes is corrupt, as on the thread pool', async () => {
  const raw = Buffer.from(prose(300_000, 21));
  const { stored, flags } = await maybeCompress(raw, 'auto');
  assert.equal(flags & BLOB_COMPRESSED, BLOB_COMPRESSED);
  // Both ways, each as a promise (decompressBlobHere's throw becomes a rejection).
  const ways = { pool: decompressBlob, here: async (...a: Parameters<typeof decompressBlobHere>) => decompressBlobHere(...a) };
  for (const [way, decompress] of Object.entries(ways)) {
    assert.ok((await decompress(stored, flags, raw.length, 'test')).equals(raw));
    for (const wrong of [raw.length - 1, raw.length + 1, 200_000]) {
      await assert.rejects(decompress(stored, flags, wrong, 'blob'), (e: Error) => e instanceof CofferError && e.code === 'corrupt', `${way}, raw length ${wrong}`);
    }
    const damaged = Buffer.from(stored);
    damaged[damaged.length >> 1]! ^= 0xff;
    await assert.rejects(decompress(damaged, flags, raw.length, 'blob'), (e: Error) => e instanceof CofferError && e.code === 'corrupt', `${way}, damaged`);
  }
});
