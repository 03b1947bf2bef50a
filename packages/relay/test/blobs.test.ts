// The blob API (spec/relay-api.md §3) on both backends: a local directory and S3
// (s3rver on 127.0.0.1, in-process). Immutability, ranges, listing, delete, limits,
// quota, and a failing or full store giving a clean error.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import S3rver from 's3rver';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { BlobStoreError, type BlobStore } from '../src/blobs/store.js';
import { LocalBlobStore } from '../src/blobs/local.js';
import { S3BlobStore } from '../src/blobs/s3.js';
import { inFlightReaches, standIn, startRelay, tempDir, testConfig, type TestRelay } from './helpers.js';

process.env.AWS_SDK_JS_SUPPRESS_NODE_VERSION_WARNING = '1';
const code = (r: { json: <T>() => T }) => r.json<{ error: { code: string } }>().error.code;
const octet = { 'content-type': 'application/octet-stream' };

type Backend = (t: Parameters<typeof tempDir>[0], dir: string) => Promise<Record<string, string>>;

const backends: Record<string, Backend> = {
  local: async () => ({}),
  s3: async (t, dir) => {
    const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(dir, 's3rver') });
    const { port } = (await server.run()) as unknown as { port: number };
    t.after(() => server.close());
    const endpoint = `http://127.0.0.1:${port}`;
    const c = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    await c.send(new CreateBucketCommand({ Bucket: 'coffer-test' }));
    c.destroy();
    return { COFFER_RELAY_BLOB_BACKEND: 's3', COFFER_RELAY_S3_ENDPOINT: endpoint, COFFER_RELAY_S3_BUCKET: 'coffer-test', COFFER_RELAY_S3_ACCESS_KEY_ID: 'S3RVER', COFFER_RELAY_S3_SECRET_ACCESS_KEY: 'S3RVER', COFFER_RELAY_S3_PREFIX: 'relay/' };
  },
};

for (const [name, backend] of Object.entries(backends)) {
  describe(`blob API on ${name}`, () => {
    const setup = async (t: Parameters<typeof tempDir>[0], env: Record<string, string> = {}): Promise<TestRelay> => {
      const dir = tempDir(t);
      return startRelay(t, testConfig(dir, { ...(await backend(t, dir)), ...env }));
    };

    test('put, immutable, get, ranges, head, list by prefix, delete', async (t) => {
      const r = await setup(t);
      const a = (await r.signUp()).auth();
      const bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
      const put = (n: string, b: Buffer) => r.inject({ method: 'PUT', url: `/v1/blobs/${n}`, headers: { ...a, ...octet }, payload: b });
      assert.equal((await put('data/ab/' + 'ab'.repeat(32), bytes)).statusCode, 201);
      const again = await put('data/ab/' + 'ab'.repeat(32), Buffer.from('other'));
      assert.equal(again.statusCode, 409);
      assert.equal(code(again), 'blob-exists');
      assert.equal((await put('config', Buffer.from('cfg'))).statusCode, 201);
      assert.equal((await put('index/' + 'cd'.repeat(32), Buffer.alloc(0))).statusCode, 201, 'empty objects are fine');

      const get = (n: string, range?: string) => r.inject({ method: 'GET', url: `/v1/blobs/${n}`, headers: { ...a, ...(range ? { range } : {}) } });
      const full = await get('data/ab/' + 'ab'.repeat(32));
      assert.equal(full.statusCode, 200);
      assert.deepEqual(full.rawPayload, bytes);
      const part = await get('data/ab/' + 'ab'.repeat(32), 'bytes=10-19');
      assert.equal(part.statusCode, 206);
      assert.equal(part.headers['content-range'], 'bytes 10-19/1000');
      assert.deepEqual(part.rawPayload, bytes.subarray(10, 20));
      const tail = await get('data/ab/' + 'ab'.repeat(32), 'bytes=-5');
      assert.deepEqual(tail.rawPayload, bytes.subarray(995));
      const open = await get('data/ab/' + 'ab'.repeat(32), 'bytes=990-');
      assert.deepEqual(open.rawPayload, bytes.subarray(990));
      const clipped = await get('data/ab/' + 'ab'.repeat(32), 'bytes=990-5000');
      assert.equal(clipped.headers['content-range'], 'bytes 990-999/1000');
      const bad = await get('data/ab/' + 'ab'.repeat(32), 'bytes=1000-1001');
      assert.equal(bad.statusCode, 416);
      assert.equal(bad.headers['content-range'], 'bytes */1000');
      const backwards = await get('data/ab/' + 'ab'.repeat(32), 'bytes=5-2');
      assert.equal(backwards.statusCode, 200, 'an invalid range (last before first) is ignored, not unsatisfiable (RFC 9110 §14.1.1, §14.2)');
      assert.deepEqual(backwards.rawPayload, bytes);
      assert.equal((await get('data/ab/' + 'ab'.repeat(32), 'items=1-2')).statusCode, 200, 'a non-byte range is ignored');
      assert.equal(code(await get('nothere')), 'blob-not-found');

      const head = await r.inject({ method: 'HEAD', url: '/v1/blobs/config', headers: a });
      assert.equal(head.statusCode, 200);
      assert.equal(head.headers['content-length'], '3');
      assert.equal((await r.inject({ method: 'HEAD', url: '/v1/blobs/nothere', headers: a })).statusCode, 404);

      const list = (p: string) => r.inject({ method: 'GET', url: `/v1/blobs?prefix=${p}`, headers: a }).then((x) => x.json<{ blobs: { name: string; size: number }[] }>().blobs);
      assert.deepEqual(await list(''), [
        { name: 'config', size: 3 },
        { name: 'data/ab/' + 'ab'.repeat(32), size: 1000 },
        { name: 'index/' + 'cd'.repeat(32), size: 0 },
      ]);
      assert.deepEqual((await list('data/')).map((b) => b.name), ['data/ab/' + 'ab'.repeat(32)]);
      assert.deepEqual(await list('zzz'), []);
      assert.equal((await r.inject({ method: 'GET', url: '/v1/blobs?prefix=../', headers: a })).statusCode, 400);

      assert.equal((await r.inject({ method: 'DELETE', url: '/v1/blobs/config', headers: a })).statusCode, 204);
      assert.equal((await r.inject({ method: 'DELETE', url: '/v1/blobs/config', headers: a })).statusCode, 204, 'absent is fine');
      assert.equal(code(await get('config')), 'blob-not-found');
      assert.equal((await put('config', Buffer.from('new'))).statusCode, 201, 'a deleted name can be written again');
    });

    test('bad names, wrong content type, per-object limit, quota', async (t) => {
      const r = await setup(t, { COFFER_RELAY_MAX_OBJECT_BYTES: '1000', COFFER_RELAY_QUOTA_BYTES: '2500' });
      const a = (await r.signUp()).auth();
      const put = (n: string, b: Buffer, h: Record<string, string> = octet) => r.inject({ method: 'PUT', url: `/v1/blobs/${n}`, headers: { ...a, ...h }, payload: b });
      for (const n of ['Config', 'data//x', 'data/', '..%2fx', 'a.b', 'x'.repeat(201), 'a_b', 'a-b']) {
        const res = await put(n, Buffer.from('x'));
        assert.deepEqual([res.statusCode, code(res)], [400, 'bad-blob-name'], n);
      }
      // %2e%2e is decoded to `..` before routing: /v1/blobs/../x is no route at all.
      const dots = await put('%2e%2e/x', Buffer.from('x'));
      assert.deepEqual([dots.statusCode, code(dots)], [404, 'not-found']);
      assert.equal((await put('x', Buffer.from('x'), { 'content-type': 'text/plain' })).statusCode, 415);
      const big = await put('big', Buffer.alloc(1001));
      assert.equal(big.statusCode, 413);
      assert.equal(code(big), 'blob-too-large');
      assert.equal((await put('a', Buffer.alloc(1000))).statusCode, 201);
      assert.equal((await put('b', Buffer.alloc(1000))).statusCode, 201);
      const over = await put('c', Buffer.alloc(1000));
      assert.equal(over.statusCode, 507);
      assert.equal(code(over), 'quota-exceeded');
      assert.equal((await put('c', Buffer.alloc(500))).statusCode, 201, 'exactly at the quota');
      assert.equal((await r.inject({ method: 'DELETE', url: '/v1/blobs/a', headers: a })).statusCode, 204);
      assert.equal((await put('d', Buffer.alloc(1000))).statusCode, 201, 'delete frees quota');
      // The quota is per account.
      const b = (await r.signUp()).auth();
      assert.equal((await r.inject({ method: 'PUT', url: '/v1/blobs/a', headers: { ...b, ...octet }, payload: Buffer.alloc(1000) })).statusCode, 201);
    });

    test('concurrent deletes of one object release its size once', async (t) => {
      const r = await setup(t, { COFFER_RELAY_MAX_OBJECT_BYTES: '1000', COFFER_RELAY_QUOTA_BYTES: '2000' });
      const a = (await r.signUp()).auth();
      const put = (n: string) => r.inject({ method: 'PUT', url: `/v1/blobs/${n}`, headers: { ...a, ...octet }, payload: Buffer.alloc(1000) });
      assert.equal((await put('a')).statusCode, 201);
      assert.equal((await put('b')).statusCode, 201);
      const deletes = await Promise.all(Array.from({ length: 6 }, () => r.inject({ method: 'DELETE', url: '/v1/blobs/a', headers: a })));
      for (const d of deletes) assert.equal(d.statusCode, 204);
      assert.equal((await put('c')).statusCode, 201, 'the deleted object\'s 1000 bytes are free');
      assert.equal(code(await put('d')), 'quota-exceeded', 'and only those');
    });
  });
}

class FailingStore implements BlobStore {
  readonly name = 'failing';
  constructor(
    readonly inner: BlobStore,
    readonly mode: { fail: 'none' | 'error' | 'full' },
  ) {}
  #check(): void {
    if (this.mode.fail === 'error') throw new BlobStoreError('simulated EIO');
    if (this.mode.fail === 'full') throw new BlobStoreError('simulated ENOSPC', true);
  }
  async put(ns: string, n: string, d: Buffer) {
    this.#check();
    return this.inner.put(ns, n, d);
  }
  async size(ns: string, n: string) {
    if (this.mode.fail === 'error') this.#check();
    return this.inner.size(ns, n);
  }
  async read(ns: string, n: string, r?: { start: number; end: number }): Promise<Readable | null> {
    if (this.mode.fail === 'error') this.#check();
    return this.inner.read(ns, n, r);
  }
  async list(ns: string, p: string) {
    if (this.mode.fail === 'error') this.#check();
    return this.inner.list(ns, p);
  }
  async delete(ns: string, n: string) {
    this.#check();
    return this.inner.delete(ns, n);
  }
  async close() {}
}

test('a failing or full blob store gives a clean 503/507, and nothing half-written', async (t) => {
  const dir = tempDir(t);
  const mode: { fail: 'none' | 'error' | 'full' } = { fail: 'none' };
  const r = await startRelay(t, testConfig(dir), { blobStore: new FailingStore(new LocalBlobStore(join(dir, 'blobs')), mode) });
  const a = (await r.signUp()).auth();
  const put = (n: string) => r.inject({ method: 'PUT', url: `/v1/blobs/${n}`, headers: { ...a, ...octet }, payload: Buffer.alloc(100, 1) });
  assert.equal((await put('one')).statusCode, 201);
  mode.fail = 'full';
  const full = await put('two');
  assert.equal(full.statusCode, 507);
  assert.equal(code(full), 'blob-store-full');
  mode.fail = 'error';
  for (const res of [await put('two'), await r.inject({ method: 'GET', url: '/v1/blobs/one', headers: a }), await r.inject({ method: 'GET', url: '/v1/blobs', headers: a })]) {
    assert.equal(res.statusCode, 503);
    assert.equal(code(res), 'blob-store-unavailable');
    assert.ok(res.json<{ error: { retryAfter: number } }>().error.retryAfter > 0);
  }
  mode.fail = 'none';
  assert.deepEqual((await r.inject({ method: 'GET', url: '/v1/blobs', headers: a })).json(), { blobs: [{ name: 'one', size: 100 }] });
  assert.equal((await put('two')).statusCode, 201, 'works again once the store recovers');
});

test('upload bodies in flight are bounded across the relay: 503 uploads-busy with retryAfter, then accepted', async (t) => {
  const dir = tempDir(t);
  const r = await startRelay(t, testConfig(dir, { COFFER_RELAY_MAX_OBJECT_BYTES: '1000', COFFER_RELAY_MAX_IN_FLIGHT_BYTES: '1500' }));
  const a = (await r.signUp()).auth();
  const b = (await r.signUp()).auth();
  const slow = new PassThrough();
  const first = r.inject({ method: 'PUT', url: '/v1/blobs/slow', headers: { ...a, ...octet, 'content-length': '1000' }, payload: slow });
  // A body holds the budget as its bytes arrive (not its declared length up front).
  slow.write(Buffer.alloc(950, 1));
  await inFlightReaches(r, 950);
  // Another account (the first holds its own per-account budget of 1000).
  const busy = await r.inject({ method: 'PUT', url: '/v1/blobs/other', headers: { ...b, ...octet }, payload: Buffer.alloc(600) });
  assert.equal(busy.statusCode, 503);
  assert.equal(code(busy), 'uploads-busy');
  assert.ok(busy.json<{ error: { retryAfter: number } }>().error.retryAfter > 0);
  assert.equal((await r.inject({ method: 'PUT', url: '/v1/blobs/small', headers: { ...b, ...octet }, payload: Buffer.alloc(400) })).statusCode, 201, 'what fits still goes');
  slow.end(Buffer.alloc(50, 1));
  assert.equal((await first).statusCode, 201);
  assert.equal((await r.inject({ method: 'PUT', url: '/v1/blobs/other', headers: { ...a, ...octet }, payload: Buffer.alloc(600) })).statusCode, 201, 'released once answered');
});

test('announced lengths hold no budget until their bytes arrive: a few free accounts trickling large bodies do not block everyone\'s uploads', async (t) => {
  const dir = tempDir(t);
  const r = await startRelay(t, testConfig(dir, { COFFER_RELAY_MAX_OBJECT_BYTES: '1000', COFFER_RELAY_MAX_IN_FLIGHT_BYTES: '2000' }));
  // Each attacker announces the largest body and sends one byte (then would trickle).
  const trickles: PassThrough[] = [];
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < 4; i++) {
    const h = (await r.signUp()).auth();
    const body = new PassThrough();
    trickles.push(body);
    pending.push(r.inject({ method: 'PUT', url: `/v1/blobs/slow${i}`, headers: { ...h, ...octet, 'content-length': '1000' }, payload: body }));
    body.write(Buffer.alloc(1, 1));
  }
  await inFlightReaches(r, 4);
  const other = (await r.signUp()).auth();
  const res = await r.inject({ method: 'PUT', url: '/v1/blobs/mine', headers: { ...other, ...octet }, payload: Buffer.alloc(900) });
  assert.equal(res.statusCode, 201, `another account's upload: ${res.statusCode} ${res.body}`);
  // What they send still counts: past the budget, the next byte of theirs is refused.
  for (const b of trickles) b.end(Buffer.alloc(999, 1));
  const codes = (await Promise.all(pending)).map((x) => (x as { statusCode: number }).statusCode).sort();
  assert.ok(codes.every((c) => c === 201 || c === 503), codes.join(','));
});

test('the S3 client gives up on an endpoint that accepts and never answers', async (t) => {
  const silent = await standIn(t, () => {}); // reads the request, never answers
  const store = new S3BlobStore({ endpoint: silent.url, bucket: 'b', accessKeyId: 'x', secretAccessKey: 'y', requestTimeoutMs: 200, connectionTimeoutMs: 200 });
  t.after(() => store.close());
  await assert.rejects(store.size('ns', 'name'), BlobStoreError);
});

test('local store: 201 only after the new link and every directory the put created are fsynced', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'blobs');
  const synced: string[] = [];
  const store = new LocalBlobStore(root, { syncDir: async (p) => void synced.push(p) });
  assert.equal(await store.put('ns1', 'data/ab/cd', Buffer.from('x')), 'created');
  assert.deepEqual(synced, [dir, root, join(root, 'ns1'), join(root, 'ns1', 'data'), join(root, 'ns1', 'data', 'ab')]);
  synced.length = 0;
  assert.equal(await store.put('ns1', 'data/ab/ef', Buffer.from('y')), 'created');
  assert.deepEqual(synced, [join(root, 'ns1', 'data', 'ab')], 'an existing directory: only the link is synced');
  synced.length = 0;
  assert.equal(await store.put('ns1', 'data/ab/ef', Buffer.from('y')), 'exists');
  assert.deepEqual(synced, []);
});

test('local store: a directory not known to be durable has its parent synced by the put that uses it (made by a put whose sync is still pending; left by an earlier process; removed and made again)', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'blobs');
  const ns = join(root, 'ns');
  const data = join(ns, 'data');
  await fs.mkdir(data, { recursive: true });
  const synced: string[] = [];
  // The first sync of data/ (the slow put's, for the data/ab it made) is held.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let holding = true;
  const store = new LocalBlobStore(root, {
    syncDir: async (p) => {
      if (holding && p === data) {
        holding = false;
        await held;
      }
      synced.push(p);
    },
  });
  const body = new PassThrough();
  const slow = store.put('ns', 'data/ab/slow', body);
  while (holding) await new Promise((r) => setImmediate(r));
  assert.equal(await store.put('ns', 'data/ab/fast', Buffer.from('x')), 'created');
  assert.ok(synced.includes(data), 'data/ab, whose entry the other put has not synced yet, is synced into data/');
  release();
  body.end(Buffer.from('y'));
  assert.equal(await slow, 'created');
  synced.length = 0;
  assert.equal(await store.put('ns', 'data/ab/more', Buffer.from('z')), 'created');
  assert.deepEqual(synced, [join(data, 'ab')], 'then known: the link\'s directory only');
  // Another store (a restarted relay) on the same tree: each parent below root once (not
  // root's own: the operator's directory), then the link's only.
  synced.length = 0;
  const again = new LocalBlobStore(root, { syncDir: async (p) => void synced.push(p) });
  assert.equal(await again.put('ns', 'data/ab/next', Buffer.from('z')), 'created');
  assert.deepEqual(synced.sort(), [root, ns, data, join(data, 'ab')]);
  synced.length = 0;
  assert.equal(await again.put('ns', 'data/ab/last', Buffer.from('z')), 'created');
  assert.deepEqual(synced, [join(data, 'ab')]);
  // Emptied and removed by deletes (data/ab and data/), made again: synced again.
  for (const n of ['slow', 'fast', 'more', 'next', 'last']) assert.equal(await again.delete('ns', `data/ab/${n}`), true);
  assert.equal(existsSync(data), false);
  synced.length = 0;
  assert.equal(await again.put('ns', 'data/ab/back', Buffer.from('w')), 'created');
  assert.deepEqual(synced, [ns, data, join(data, 'ab')]);
});

test('local store: the body is read on while a batch is being written, paused once 1 MiB waits behind the write, stored in order', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'blobs');
  const store = new LocalBlobStore(root, { syncDir: async () => {} });
  // Holds the store's first file write until released (FileHandle.prototype, restored after).
  const probe = await fs.open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { writev: (...a: unknown[]) => Promise<unknown> };
  await probe.close();
  const writev = proto.writev;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let writes = 0;
  proto.writev = async function (this: unknown, ...a: unknown[]) {
    writes++;
    await gate;
    return writev.apply(this, a);
  };
  t.after(() => void (proto.writev = writev));
  const turns = async (n = 10): Promise<void> => {
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
  };
  const KiB = 1024;
  const bytes = randomBytes(3 * 1024 * KiB);
  const body = new PassThrough();
  const put = store.put('ns', 'data/x', body);
  while (body.listenerCount('data') === 0) await turns(1);
  body.write(bytes.subarray(0, 256 * KiB));
  await turns();
  assert.equal(writes, 1, 'a batch is being written (held)');
  body.write(bytes.subarray(256 * KiB, 768 * KiB));
  await turns();
  assert.equal(body.readableLength, 0, 'the body is read on while the write is held');
  assert.equal(body.isPaused(), false);
  body.write(bytes.subarray(768 * KiB, 1792 * KiB));
  await turns();
  assert.equal(body.isPaused(), true, 'reading pauses once 1 MiB waits behind the write');
  assert.equal(writes, 1, 'one write at a time');
  release();
  body.end(bytes.subarray(1792 * KiB));
  assert.equal(await put, 'created');
  assert.ok(readFileSync(join(root, 'ns', 'data', 'x')).equals(bytes));
});

test('local store: a put overlaps its independent file-system steps (mkdir with the lstat, the link with the close, the temporary\'s unlink with the directory sync) and unlinks the temporary once', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'blobs');
  const events: string[] = [];
  const store = new LocalBlobStore(root, {
    syncDir: async (p) => {
      events.push(`sync ${p === join(root, 'ns', 'data', 'ab') ? 'link-dir' : 'other'}`);
    },
  });
  const orig = { lstat: fs.lstat, mkdir: fs.mkdir, link: fs.link, unlink: fs.unlink, open: fs.open };
  const watch = <A extends unknown[], R>(name: string, f: (...a: A) => Promise<R>) =>
    function (this: unknown, ...a: A): Promise<R> {
      events.push(`${name} start`);
      return f.apply(this, a).finally(() => events.push(`${name} end`));
    };
  t.after(() => Object.assign(fs, orig));
  // A FileHandle's close is its own property: the handles the put opens are watched.
  const open = async (...a: Parameters<typeof fs.open>) => {
    const fh = await orig.open(...a);
    fh.close = watch('close', fh.close.bind(fh));
    return fh;
  };
  Object.assign(fs, { lstat: watch('lstat', orig.lstat as never), mkdir: watch('mkdir', orig.mkdir as never), link: watch('link', orig.link as never), unlink: watch('unlink', orig.unlink as never), open });
  await fs.mkdir(join(root, 'ns', 'data', 'ab'), { recursive: true });
  events.length = 0;
  assert.equal(await store.put('ns', 'data/ab/cd', Buffer.from('x')), 'created');
  const at = (e: string) => events.indexOf(e);
  assert.ok(at('mkdir start') >= 0 && at('mkdir start') < at('lstat end'), `mkdir goes out before the lstat answers: ${events.join(', ')}`);
  assert.ok(at('link start') >= 0 && at('link start') < at('close end'), `the link goes out before the file is closed: ${events.join(', ')}`);
  assert.ok(at('unlink start') >= 0 && at('sync link-dir') >= 0 && at('sync link-dir') < at('unlink end'), `the directory sync goes out before the unlink answers: ${events.join(', ')}`);
  assert.ok(at('link end') < at('sync link-dir'), 'the link is synced after it is made');
  assert.equal(events.filter((e) => e === 'unlink start').length, 1, 'the temporary file is unlinked once');
  assert.equal(readFileSync(join(root, 'ns', 'data', 'ab', 'cd'), 'utf8'), 'x');
  assert.deepEqual(await fs.readdir(join(root, 'ns', 'data', 'ab')), ['cd'], 'no temporary file is left');
});

test('local store: names that collide on disk ("a" and "a/b") are 409 blob-exists, not 503', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const a = (await r.signUp()).auth();
  const put = (n: string) => r.inject({ method: 'PUT', url: `/v1/blobs/${n}`, headers: { ...a, ...octet }, payload: Buffer.from('x') });
  assert.equal((await put('a')).statusCode, 201);
  const below = await put('a/b');
  assert.equal(below.statusCode, 409);
  assert.equal(code(below), 'blob-exists');
  assert.equal((await put('c/d')).statusCode, 201);
  const above = await put('c');
  assert.equal(above.statusCode, 409);
  assert.equal(code(above), 'blob-exists');
});

test('the S3 SDK is loaded by an S3 store\'s first request, never by a relay on a local directory', async () => {
  // ~4 MB of heap every full collection of a relay on a local store would mark (issue 13).
  const script = `
    const { createRequire } = await import('node:module');
    const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('@aws-sdk/client-s3'));
    await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
    const { S3BlobStore } = await import(${JSON.stringify(new URL('../src/blobs/s3.js', import.meta.url).href)});
    const store = new S3BlobStore({ endpoint: 'http://127.0.0.1:1', bucket: 'b', accessKeyId: 'a', secretAccessKey: 's', connectionTimeoutMs: 200 });
    const before = loaded();
    const failed = await store.size('ns', 'x').then(() => 'no', (e) => e.name);
    await store.close();
    process.stdout.write(JSON.stringify({ before, after: loaded(), failed, closed: await store.size('ns', 'x').then(() => 'no', (e) => e.name) }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, AWS_SDK_JS_SUPPRESS_NODE_VERSION_WARNING: '1' } });
  assert.deepEqual(JSON.parse(r.stdout || '{}'), { before: false, after: true, failed: 'BlobStoreError', closed: 'BlobStoreError' }, r.stderr);
});

test('local store: what a crash mid-upload left (an old .tmp- file, the directories only it held) is swept at start, freeing the name; a recent one and every object stay', async (t) => {
  const root = join(tempDir(t), 'blobs');
  const store = new LocalBlobStore(root);
  assert.equal(await store.put('acct', 'data/keep', Buffer.from('object')), 'created');
  // Left by a relay killed mid-upload of data/ab/killed an hour ago, and by an upload in progress now.
  await fs.mkdir(join(root, 'acct', 'data', 'ab'), { recursive: true });
  const old = join(root, 'acct', 'data', 'ab', '.tmp-0123456789abcdef');
  await fs.writeFile(old, 'partial');
  const hourAgo = (Date.now() - 3_600_000) / 1000;
  await fs.utimes(old, hourAgo, hourAgo);
  await fs.mkdir(join(root, 'acct', 'snapshots'));
  const fresh = join(root, 'acct', 'snapshots', '.tmp-fedcba9876543210');
  await fs.writeFile(fresh, 'uploading');
  assert.equal(await store.put('acct', 'data/ab', Buffer.from('x')), 'exists', 'the leftover directory takes the name');

  assert.deepEqual(await store.sweepTemporaries(15 * 60_000), { files: 1, dirs: 1 });
  assert.equal(existsSync(old), false);
  assert.equal(existsSync(fresh), true, 'an upload written to recently is left alone');
  assert.equal(await store.put('acct', 'data/ab', Buffer.from('x')), 'created', 'the name is free again');
  assert.deepEqual((await store.list('acct', '')).map((b) => b.name), ['data/ab', 'data/keep']);
});

test('a relay started on a blob directory a crash left sweeps it: the leftover temporary file goes', async (t) => {
  const dir = tempDir(t);
  const left = join(dir, 'blobs', 'someone', 'data', 'ab');
  await fs.mkdir(left, { recursive: true });
  await fs.writeFile(join(left, '.tmp-0123456789abcdef'), 'partial');
  const dayAgo = (Date.now() - 86_400_000) / 1000;
  await fs.utimes(join(left, '.tmp-0123456789abcdef'), dayAgo, dayAgo);
  await startRelay(t, testConfig(dir));
  for (const end = Date.now() + 15_000; existsSync(left) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
  assert.equal(existsSync(left), false, 'the temporary file and the directory only it held are gone');
  assert.equal(existsSync(join(dir, 'blobs', 'someone')), true, 'the account directory stays');
});
