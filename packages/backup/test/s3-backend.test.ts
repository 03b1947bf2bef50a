/**
 * The direct S3 backend (storage/s3.ts) against a real local S3 server (s3rver): the
 * Backend contract (immutable puts, ranged gets, listing, missing objects), conditional
 * create when writers race, locks, and whole repositories end to end (backup, restore,
 * check --read-data, forget, prune, repair index).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
import {
  BackupKey,
  CofferError,
  Repository,
  RepositoryLock,
  S3Backend,
  backup,
  check,
  forgetSnapshots,
  parseS3Location,
  prune,
  repairIndex,
  restore,
} from '../src/index.js';
import { S3_CREDS, conditionalLayer, startS3 } from './fixtures/s3.js';
import { SMALL_CHUNKER, assertSameTree, dir, file, prng, sampleTree, tempDir, writeTree } from './fixtures/trees.js';

const isCode = (code: string, msg?: RegExp) => (e: unknown) => e instanceof CofferError && e.code === code && (!msg || msg.test(e.message));

async function s3Backend(t: Parameters<typeof startS3>[0], endpoint?: string, prefix = 'backups/laptop/'): Promise<S3Backend> {
  const s3 = endpoint ?? (await startS3(t)).endpoint;
  const b = new S3Backend({ endpoint: s3, bucket: 'coffer-test', prefix }, { credentials: S3_CREDS });
  t.after(() => b.close());
  await b.ensureBucket();
  return b;
}

test('parseS3Location: endpoint, bucket and prefix; garbage is refused with the expected form', () => {
  assert.deepEqual(parseS3Location('https://s3.example.com/bucket/some/prefix'), { endpoint: 'https://s3.example.com', bucket: 'bucket', prefix: 'some/prefix/' });
  assert.deepEqual(parseS3Location('http://127.0.0.1:9000/b-1/'), { endpoint: 'http://127.0.0.1:9000', bucket: 'b-1', prefix: '' });
  assert.deepEqual(parseS3Location('s3.amazonaws.com/bucket'), { endpoint: 'https://s3.amazonaws.com', bucket: 'bucket', prefix: '' });
  assert.deepEqual(parseS3Location('https://h:8443/bkt/a/b/'), { endpoint: 'https://h:8443', bucket: 'bkt', prefix: 'a/b/' });
  for (const [bad, why] of [
    ['', /no host|not a URL/],
    ['https://host', /no bucket/],
    ['bucket/prefix', /'bucket' is not a host name/],
    ['//bucket/prefix', /names no endpoint/],
    ['https://host/', /no bucket/],
    ['ftp://host/b', /scheme ftp:/],
    ['https://key:secret@host/bucket', /credentials do not go in the URL/],
    ['https://host/Bucket_Name', /not a valid bucket name/],
    ['https://host/bucket/a//b', /empty/],
    ['https://host/bucket/a/../b', /no bucket|empty|"\."/],
    ['https://host/bucket?x=1', /query/],
    ['https://host/bucket/a%20b', /escaped/],
  ] as const) {
    assert.throws(() => parseS3Location(bad), (e: unknown) => isCode('invalid-argument', /expected s3:https:\/\/host/)(e) && why.test((e as Error).message), bad);
  }
});

test('S3Backend keeps the Backend contract: immutable puts, ranged gets, listing under the prefix, missing objects', async (t) => {
  const s3 = await startS3(t);
  const b = await s3Backend(t, s3.endpoint);
  const other = await s3Backend(t, s3.endpoint, 'elsewhere/');
  const data = prng(1, 100_000);
  await b.put('data/ab/abcd', [data.subarray(0, 10), data.subarray(10)]);
  assert.deepEqual(Buffer.from(await b.get('data/ab/abcd')), data);
  assert.deepEqual(Buffer.from(await b.get('data/ab/abcd', { offset: 12_345, length: 777 })), data.subarray(12_345, 13_122));
  assert.equal((await b.get('data/ab/abcd', { offset: 99_990, length: 100 })).length, 10, 'a range past the end is short, like a file');
  assert.equal((await b.get('data/ab/abcd', { offset: 200_000, length: 100 })).length, 0);
  assert.equal((await b.get('data/ab/abcd', { offset: 5, length: 0 })).length, 0);
  const st = await b.stat('data/ab/abcd');
  assert.equal(st?.size, data.length);
  assert.ok(st?.mtime && Math.abs(st.mtime - Date.now()) < 10 * 60_000, 'a modification time');
  assert.equal(await b.stat('data/ab/none'), null);
  await assert.rejects(b.put('data/ab/abcd', [Buffer.from('other')]), isCode('storage', /already exists.*immutable/));
  assert.deepEqual(Buffer.from(await b.get('data/ab/abcd')), data, 'the first bytes stay');
  await assert.rejects(b.get('data/ab/none'), isCode('missing-object', /data\/ab\/none is missing/));
  await assert.rejects(b.get('data/ab/none', { offset: 0, length: 4 }), isCode('missing-object'));

  const w = await b.create('index/ff');
  await w.write([Buffer.from('hello ')]);
  assert.equal(await b.stat('index/ff'), null, 'nothing visible before commit');
  await w.write([Buffer.from('world')]);
  await w.commit();
  assert.equal(Buffer.from(await b.get('index/ff')).toString(), 'hello world');
  const aborted = await b.create('index/ee');
  await aborted.write([Buffer.from('x')]);
  await aborted.abort();
  assert.equal(await b.stat('index/ee'), null, 'an aborted writer leaves nothing');
  await other.put('index/aa', [Buffer.from('in another prefix')]);

  for (let i = 0; i < 5; i++) await b.put(`snapshots/${i}`, [Buffer.from([i])]);
  assert.deepEqual((await b.list('snapshots/')).map((o) => o.name), ['snapshots/0', 'snapshots/1', 'snapshots/2', 'snapshots/3', 'snapshots/4']);
  assert.deepEqual((await b.list('index/')).map((o) => [o.name, o.size]), [['index/ff', 11]], 'the other prefix is not listed');
  assert.deepEqual((await b.list('')).map((o) => o.name).length, 7);
  await b.delete('snapshots/3');
  await b.delete('snapshots/3'); // a missing object: not an error
  assert.equal((await b.list('snapshots/')).length, 4);
  await b.sync();
  await assert.rejects(b.stat('../escape'), RangeError);
  await assert.rejects(async () => b.put('Data/X', [Buffer.alloc(1)]), RangeError);
});

test("openReader: a pack's pieces read into the caller's one buffer, byte-exact, the last short; past the end nothing; closed or missing: errors", async (t) => {
  const b = await s3Backend(t);
  const data = prng(2, 3 * 1024 * 1024 + 999);
  await b.put('data/cd/cdcd', [data]);
  const reader = await b.openReader('data/cd/cdcd');
  const piece = 1024 * 1024;
  const buf = Buffer.alloc(piece + 1);
  const got: Buffer[] = [];
  for (let o = 0; o < data.length; o += piece) {
    const last = o + piece >= data.length;
    const want = Math.min(piece, data.length - o);
    const p = await reader.read({ offset: o, length: last ? want + 1 : want }, buf);
    assert.equal(p.length, want, `piece at ${o}`);
    assert.equal(p.buffer, buf.buffer, `piece at ${o}: a view of the caller's buffer`);
    got.push(Buffer.from(p));
  }
  assert.deepEqual(Buffer.concat(got), data);
  assert.deepEqual(Buffer.from(await reader.read({ offset: 10, length: 100 })), data.subarray(10, 110));
  assert.equal((await reader.read({ offset: data.length + 5, length: 10 }, buf)).length, 0, 'past the end: nothing');
  await assert.rejects(reader.read({ offset: 0, length: 100 }, Buffer.alloc(10)), RangeError);
  await reader.close();
  await assert.rejects(reader.read({ offset: 0, length: 10 }), isCode('storage', /closed/));
  await assert.rejects((await b.openReader('data/cd/none')).read({ offset: 0, length: piece }, buf), isCode('missing-object'));
});

test('conditional create: writers racing past the HEAD check get one success; the server refuses the rest with 412', async (t) => {
  const s3 = await startS3(t);
  const layer = await conditionalLayer(t, s3.endpoint);
  const b = await s3Backend(t, layer.endpoint);
  const N = 6;
  layer.holdHeads('/backups/laptop/config', N);
  const results = await Promise.allSettled(Array.from({ length: N }, (_, i) => b.put('config', [Buffer.from(`writer ${i}`)])));
  const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
  assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.status)));
  for (const r of results) if (r.status === 'rejected') assert.ok(isCode('storage', /already exists/)(r.reason), String(r.reason));
  assert.equal(layer.refused(), N - 1);
  assert.equal(Buffer.from(await b.get('config')).toString(), `writer ${won[0]}`);
});

test('two coffer init racing on one s3: location: one repository, the other is refused', async (t) => {
  const s3 = await startS3(t);
  const layer = await conditionalLayer(t, s3.endpoint);
  const b1 = await s3Backend(t, layer.endpoint);
  const b2 = await s3Backend(t, layer.endpoint);
  layer.holdHeads('/backups/laptop/config', 2);
  const [k1, k2] = [BackupKey.generate(), BackupKey.generate()];
  const r = await Promise.allSettled([Repository.init(b1, k1), Repository.init(b2, k2)]);
  assert.equal(r.filter((x) => x.status === 'fulfilled').length, 1);
  const winner = r[0]!.status === 'fulfilled' ? k1 : k2;
  await Repository.open(b1, winner);
});

test('a whole repository on S3: backup, restore, check --read-data, locks, forget, prune, repair index', async (t) => {
  const b = await s3Backend(t);
  const key = BackupKey.generate();
  const repo = await Repository.init(b, key, { chunker: SMALL_CHUNKER });
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, sampleTree(7));
  const first = await backup(repo, { paths: [src] });
  await writeTree(join(src, 'later'), dir({ 'new.txt': file('a later file\n'.repeat(100)) }));
  const second = await backup(repo, { paths: [src] });
  assert.ok(second.snapshot.stats.addedBytes < first.snapshot.stats.addedBytes, 'deduplicated against the first backup');

  const reopened = await Repository.open(b, key);
  const out = await tempDir(t, 'out');
  await restore(reopened, { id: second.id, snapshot: second.snapshot }, { target: out });
  await assertSameTree(src, join(out, 'data'));
  assert.deepEqual((await check(reopened, { readData: true })).problems, []);

  // Locks work through S3's listing: prune (exclusive) is refused while a backup's lock is live.
  const held = await RepositoryLock.acquire(reopened, false);
  await assert.rejects(prune(reopened), isCode('locked'));
  await held.release();

  await forgetSnapshots(reopened, [{ id: first.id }]);
  const pr = await prune(reopened);
  assert.ok(pr.packsDeleted + pr.packsRepacked >= 0);
  for (const o of await b.list('index/')) await b.delete(o.name);
  reopened.invalidateIndex();
  const rep = await repairIndex(reopened);
  assert.ok(rep.packs > 0);
  const again = await Repository.open(b, key);
  assert.deepEqual((await check(again, { readData: true })).problems, []);
  const out2 = await tempDir(t, 'out2');
  await restore(again, (await again.snapshots())[0]!, { target: out2 });
  await assertSameTree(src, join(out2, 'data'));
  assert.equal((await again.snapshots()).length, 1);
});

test('storage failures on S3 are CofferError storage with the reason: unreachable endpoint, missing bucket', async (t) => {
  const s3 = await startS3(t);
  const key = BackupKey.generate();
  const missingBucket = new S3Backend({ endpoint: s3.endpoint, bucket: 'no-such-bucket', prefix: '' }, { credentials: S3_CREDS });
  t.after(() => missingBucket.close());
  await assert.rejects(missingBucket.list('snapshots/'), isCode('storage', /bucket no-such-bucket does not exist.*coffer init/));
  // (Wrong credentials can't be shown here: s3rver accepts any signature.)
  await s3.stop();
  const down = new S3Backend({ endpoint: s3.endpoint, bucket: 'coffer-test', prefix: '' }, { credentials: S3_CREDS, connectionTimeoutMs: 500 });
  t.after(() => down.close());
  await assert.rejects(Repository.open(down, key), isCode('storage', /cannot reach http:\/\/127\.0\.0\.1:\d+|failed/));
});
