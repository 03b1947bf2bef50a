/**
 * The chunking workers start as work arrives (issue 13): none before the first job, one
 * for work that one worker keeps up with, the next only when a job comes while every
 * worker has two jobs already (a batch of small files counts as two thirds of a job), never more than asked for. Each job's result is the same whichever
 * worker took it.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { promises as fs, readFileSync, readdirSync } from 'node:fs';
import { getPriority } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { BackupKey, DEFAULT_CHUNKER, RepositoryKeys } from '../src/index.js';
import { ChunkPool, peerCompressedForTesting } from '../src/chunker/chunk-pool.js';
import { BLOB_COMPRESSED } from '../src/repository/blob.js';
import { decompressBlob } from '../src/repository/compress.js';
import { CHUNK_REGION_BYTES, knownByRegion } from '../src/repository/backup.js';
import { WORKER_NICE_DELTA } from '../src/repository/thread-priority.js';
import { tempDir } from './fixtures/trees.js';

test('workers start with the work: none idle, one for one job at a time, a second when a job finds the first with two, at most the limit', async (t) => {
  const dir = await tempDir(t, 'pool');
  const files: Buffer[] = [];
  const contents: Buffer[] = [];
  for (let i = 0; i < 40; i++) {
    const p = join(dir, `f${i}`);
    const c = randomBytes(100 + i * 37);
    await fs.writeFile(p, c);
    files.push(Buffer.from(p));
    contents.push(c);
  }
  const keys = new RepositoryKeys(BackupKey.generate(), randomBytes(16));
  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER), 2);
  t.after(() => pool.close());
  assert.equal(pool.started, 0, 'no worker before the first job');

  const check = (b: Awaited<ReturnType<ChunkPool['chunkBatch']>>, from: number, n: number) => {
    for (let k = 0; k < n; k++) {
      const want = createHmac('sha256', keys.chunkIdKey).update(contents[from + k]!).digest();
      assert.deepEqual(b.ids.subarray(32 * k, 32 * k + 32), want, `file ${from + k}`);
    }
  };
  // One job at a time: the first worker takes them all.
  for (let i = 0; i < 10; i += 5) check(await pool.chunkBatch(files.slice(i, i + 5), contents.slice(i, i + 5).map((c) => c.length)), i, 5);
  assert.equal(pool.started, 1, 'jobs one after another: one worker');

  // Two jobs at once (three batches): the first worker takes them all.
  const three = [10, 15, 20].map((i) => pool.chunkBatch(files.slice(i, i + 5), contents.slice(i, i + 5).map((c) => c.length)));
  assert.equal(pool.started, 1, 'a second job (second and third batch) in flight does not start a worker');
  (await Promise.all(three)).forEach((b, j) => check(b, 10 + 5 * j, 5));
  // Five batches sent together: the fourth finds the first worker with two jobs' worth and starts another; no third worker.
  const together = [0, 8, 16, 24, 32].map((i) => pool.chunkBatch(files.slice(i, i + 8), contents.slice(i, i + 8).map((c) => c.length)));
  assert.equal(pool.started, 2, 'a job while every worker has two starts the next one, up to the limit');
  const got = await Promise.all(together);
  got.forEach((b, j) => check(b, 8 * j, 8));
  // A whole file counts as a job: with both workers busy, still no third.
  const more = [0, 8, 16, 24, 32].map((i) => pool.chunkBatch(files.slice(i, i + 8), contents.slice(i, i + 8).map((c) => c.length)));
  const whole = pool.chunkFile(files[0]!, async () => {});
  assert.equal(pool.started, 2);
  (await Promise.all(more)).forEach((b, j) => check(b, 8 * j, 8));
  assert.equal((await whole).size, contents[0]!.length);
  assert.equal(pool.started, 2);
});

test('prestart(n): that many workers, never more than the pool may run', async (t) => {
  const keys = new RepositoryKeys(BackupKey.generate(), randomBytes(16));
  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER), 2);
  t.after(() => pool.close());
  pool.prestart(2);
  assert.equal(pool.started, 2);
  pool.prestart(5);
  assert.equal(pool.started, 2);
});

test('prestart: the first worker starts before any job (a backup starts it while its index loads), once', async (t) => {
  const keys = new RepositoryKeys(BackupKey.generate(), randomBytes(16));
  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER), 2);
  t.after(() => pool.close());
  pool.prestart();
  pool.prestart();
  assert.equal(pool.started, 1);
  const dir = await tempDir(t, 'pool');
  await fs.writeFile(join(dir, 'a'), 'abc');
  const b = await pool.chunkBatch([Buffer.from(join(dir, 'a'))], [3], false);
  assert.deepEqual(b.ids.subarray(0, 32), createHmac('sha256', keys.chunkIdKey).update('abc').digest());
  b.release();
  assert.equal(pool.started, 1, 'the job went to the worker already started');
});

test('compress: a new file\'s chunks come from the worker in their stored form (compressed where it pays); without it, raw', async (t) => {
  const dir = await tempDir(t, 'pool');
  // Compressible text, then random bytes: several chunks of each kind at the default sizes.
  const text = Buffer.from('the quick brown fox jumps over the lazy dog, again and again. '.repeat(60_000));
  const content = Buffer.concat([text, randomBytes(3 << 20)]);
  const p = join(dir, 'big');
  await fs.writeFile(p, content);
  const keys = new RepositoryKeys(BackupKey.generate(), randomBytes(16));
  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER, 'auto'), 1);
  t.after(() => pool.close());
  for (const compress of [true, false]) {
    const pieces: Array<Promise<Buffer>> = [];
    const flags: number[] = [];
    const got = await pool.chunkFile(
      Buffer.from(p),
      async (id, data, stored) => {
        assert.equal(stored !== undefined, compress, 'a stored form exactly when asked for');
        const raw = stored ? decompressBlob(Buffer.from(data), stored.flags, stored.rawLength, 'test') : Promise.resolve(Buffer.from(data));
        pieces.push(raw); // in the order the chunks come: the file's
        flags.push(stored?.flags ?? -1);
        assert.deepEqual(id, createHmac('sha256', keys.chunkIdKey).update(await raw).digest(), 'the ID is of the raw chunk');
      },
      { compress },
    );
    assert.equal(got.size, content.length);
    assert.ok(Buffer.concat(await Promise.all(pieces)).equals(content), 'the chunks make the file');
    if (compress) {
      assert.ok(flags.some((f) => (f & BLOB_COMPRESSED) !== 0), 'the text chunks come compressed');
      assert.ok(flags.some((f) => f === 0), 'the random chunks come raw');
    }
  }
  // `known`: the chunks listed (chunks the repository has: a changed file's chunks in its
  // parent) come as their IDs alone, to onKnown; the others in their stored form, to onChunk.
  const all = await pool.chunkFile(Buffer.from(p), async () => {});
  assert.ok(all.ids.length >= 3);
  const known = Buffer.concat([all.ids[0]!, all.ids[2]!]);
  const got: string[] = [];
  const again = await pool.chunkFile(Buffer.from(p), async (id, _data, stored) => void got.push(`stored ${id.toString('hex')} ${stored !== undefined}`), {
    compress: true,
    known,
    onKnown: (id, rawLength) => void got.push(`known ${id.toString('hex')} ${rawLength > 0}`),
  });
  assert.deepEqual(got, all.ids.map((id, i) => (i === 0 || i === 2 ? `known ${id.toString('hex')} true` : `stored ${id.toString('hex')} true`)));
  assert.deepEqual(again.ids, all.ids, 'the file\'s IDs list every chunk, known or not');
  assert.equal(again.size, content.length);
});

test('work is given out as workers get through it: each worker holds at most 8 MiB ahead, the rest waits for the first worker free', async (t) => {
  const dir = await tempDir(t, 'pool');
  const keys = new RepositoryKeys(BackupKey.generate(), randomBytes(16));
  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER), 2);
  t.after(() => pool.close());
  const contents: Buffer[] = [];
  const jobs: Array<Promise<{ size: number; ids: Buffer[] }>> = [];
  for (let i = 0; i < 6; i++) {
    const c = randomBytes(200_000 + i); // under the chunker's minimum: one chunk
    const p = join(dir, `r${i}`);
    await fs.writeFile(p, c);
    contents.push(c);
    // Each says it is 8 MiB (a region's worth): one per worker at a time.
    jobs.push(pool.chunkFile(p, async () => {}, { bytes: 8 * 1024 * 1024 }));
  }
  assert.equal(pool.started, 2);
  assert.equal(pool.waiting, 4, 'one job given to each worker, four waiting');
  const got = await Promise.all(jobs);
  assert.equal(pool.waiting, 0);
  got.forEach((r, i) => {
    assert.equal(r.size, contents[i]!.length);
    assert.deepEqual(r.ids, [createHmac('sha256', keys.chunkIdKey).update(contents[i]!).digest()], `job ${i}: its own file`);
  });
  // Small jobs (bytes given) go out together up to the window.
  const small = [0, 1, 2].map((i) => pool.chunkFile(join(dir, `r${i}`), async () => {}, { bytes: 200_000 }));
  assert.equal(pool.waiting, 0, 'small jobs are all given out at once');
  await Promise.all(small);
});

test('a changed file\'s parent chunks go with the regions they fall in (knownByRegion), not the whole list with every region', () => {
  const MiB = 1 << 20;
  const id = (i: number) => Buffer.alloc(32, i).toString('hex');
  // Parent chunks of 40 MiB, 30 MiB, 10 MiB, 60 MiB, 5 MiB: offsets 0, 40, 70, 80, 140 MiB.
  const sizes = new Map([id(1), id(2), id(3), id(4), id(5)].map((h, k) => [h, [40, 30, 10, 60, 5][k]! * MiB]));
  const chunks = [...sizes.keys()];
  const lengthOf = (b: Buffer) => sizes.get(b.toString('hex'));
  const hexIds = (k: { ids: Buffer } | undefined) => (k ? k.ids.toString('hex').match(/.{64}/g) ?? [] : null);
  const got = knownByRegion(chunks, 3, lengthOf);
  assert.equal(CHUNK_REGION_BYTES, 64 * MiB);
  assert.deepEqual(got.map(hexIds), [[id(1), id(2)], [id(3), id(4)], [id(5)]], 'by where each starts: region 0 [0, 64) MiB, 1 [64, 128), 2 from 128');
  assert.deepEqual(got.map((k) => [...k!.lengths].map((n) => n / MiB)), [[40, 30], [10, 60], [5]], 'with their lengths, in order');
  // One region: the whole list, but chunks the index lacks (their IDs alone would name nothing stored).
  assert.deepEqual(knownByRegion(chunks, 1, lengthOf).map(hexIds), [chunks]);
  assert.deepEqual(knownByRegion([id(9), ...chunks, id(8)], 1, lengthOf).map(hexIds), [chunks]);
  assert.deepEqual([...knownByRegion([id(9), ...chunks, id(8)], 1, lengthOf)[0]!.lengths].map((n) => n / MiB), [40, 30, 10, 60, 5]);
  // A chunk the index does not know: no lists (every chunk compressed on the workers).
  assert.deepEqual(knownByRegion([...chunks, id(9)], 3, lengthOf), [undefined, undefined, undefined]);
  // Chunks past the last region (the file shrank): dropped.
  assert.deepEqual(knownByRegion(chunks, 2, lengthOf).map((k) => k!.ids.length / 32), [2, 2]);
});

test('once every job is given out, a worker chunking a file while the other is idle has it compress its new chunks: the same stored bytes, in file order', async (t) => {
  const dir = await tempDir(t, 'pool');
  const text = Buffer.from('the quick brown fox jumps over the lazy dog, again and again. '.repeat(120_000));
  const content = Buffer.concat([text, randomBytes(2 << 20), text.subarray(0, 3 << 20)]);
  const p = join(dir, 'big');
  await fs.writeFile(p, content);
  await fs.writeFile(join(dir, 'a'), 'abc');
  const keys = new RepositoryKeys(BackupKey.generate(), randomBytes(16));
  const setup = ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER, 'auto');
  type Got = { id: string; data: string; flags: number; rawLength: number };
  const run = async (pool: ChunkPool, known?: Uint8Array) => {
    const got: Got[] = [];
    const r = await pool.chunkFile(Buffer.from(p), async (id, data, stored) => void got.push({ id: id.toString('hex'), data: data.toString('hex'), flags: stored!.flags, rawLength: stored!.rawLength }), {
      compress: true,
      ...(known ? { known, onKnown: (id) => void got.push({ id: id.toString('hex'), data: 'known', flags: -1, rawLength: -1 }) } : {}),
    });
    assert.equal(r.size, content.length);
    assert.deepEqual(r.ids.map((id) => id.toString('hex')), got.map((g) => g.id), 'the chunks came in file order');
    return { got, ids: r.ids };
  };
  const one = new ChunkPool(setup, 1);
  t.after(() => one.close());
  const alone = await run(one);
  assert.ok(alone.got.some((g) => (g.flags & BLOB_COMPRESSED) !== 0) && alone.got.some((g) => g.flags === 0));

  const two = new ChunkPool(setup, 2);
  t.after(() => two.close());
  // Both workers started (three jobs at once), then every job over: both idle.
  await Promise.all([0, 1, 2].map(() => two.chunkFile(Buffer.from(join(dir, 'a')), async () => {})));
  assert.equal(two.started, 2);
  // Before every job is submitted (lastJobs) and given out, a worker idle between jobs
  // is waiting for the main thread: it does not help.
  const unhelped = peerCompressedForTesting.count;
  assert.deepEqual((await run(two)).got, alone.got);
  assert.equal(peerCompressedForTesting.count, unhelped, 'no help before lastJobs');
  two.lastJobs();
  const before = peerCompressedForTesting.count;
  const helped = await run(two);
  assert.ok(peerCompressedForTesting.count > before, 'the idle worker compressed some of the chunks');
  assert.deepEqual(helped.got, alone.got, 'the same stored bytes and flags as one worker alone makes');
  // With known chunks among them: still in file order, the known ones as IDs alone.
  const known = Buffer.concat([alone.ids[1]!, alone.ids[3]!]);
  const a = await run(one, known);
  const from = peerCompressedForTesting.count;
  const b = await run(two, known);
  assert.ok(peerCompressedForTesting.count > from);
  assert.deepEqual(b.got, a.got);
});

test('two chunk workers run below the main thread: each takes WORKER_NICE_DELTA nice steps above the process, the main thread keeps its priority; one worker alone keeps it too (Linux)', { skip: process.platform !== 'linux' }, async (t) => {
  const dir = await tempDir(t, 'pool');
  const p = join(dir, 'f');
  await fs.writeFile(p, randomBytes(1000));
  const keys = new RepositoryKeys(BackupKey.generate(), randomBytes(16));
  const base = getPriority(0);
  const niceOf = (tid: string) => {
    const s = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[16]);
  };

  // One worker: nothing else of the pipeline competes with the main thread for the cores.
  const one = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER), 1);
  const beforeOne = new Set(readdirSync('/proc/self/task'));
  await one.chunkBatch([Buffer.from(p)], [1000]);
  const alone = readdirSync('/proc/self/task').filter((tid) => !beforeOne.has(tid));
  assert.ok(alone.length >= 1);
  assert.deepEqual(alone.map(niceOf), alone.map(() => base), 'a single worker keeps the process\'s priority');
  await one.close();

  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER), 2);
  t.after(() => pool.close());
  const before = new Set(readdirSync('/proc/self/task'));
  pool.prestart(2);
  // A job each, then one more: each worker has handled the message linking the two (its 'peer'), where it lowers itself.
  await Promise.all([pool.chunkBatch([Buffer.from(p)], [1000]), pool.chunkBatch([Buffer.from(p)], [1000])]);
  await Promise.all([pool.chunkBatch([Buffer.from(p)], [1000]), pool.chunkBatch([Buffer.from(p)], [1000]), pool.chunkFile(p, async () => {})]);
  const fresh = readdirSync('/proc/self/task').filter((tid) => !before.has(tid));
  const lowered = fresh.filter((tid) => niceOf(tid) === Math.min(19, base + WORKER_NICE_DELTA));
  assert.ok(WORKER_NICE_DELTA > 0);
  assert.equal(lowered.length, 2, `two worker threads at nice ${base + WORKER_NICE_DELTA} (new threads' nice: ${fresh.map(niceOf).join(' ')})`);
  assert.equal(niceOf(String(process.pid)), base, 'the main thread keeps its priority');
  assert.equal(getPriority(0), base);
});
