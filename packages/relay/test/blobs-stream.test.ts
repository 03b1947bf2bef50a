// Issue 13: upload bodies stream to the blob store (spec/relay-api.md §3–4). Over real
// sockets: a large object without a length round-trips byte-exact (S3: multipart); an
// upload cut off mid-body, one above the object limit, one crossing the quota and one
// that stalls leave no object and no temporary file; garbage framing is a clean 400.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import S3rver from 's3rver';
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { startRelay, tempDir, testConfig, type Device, type TestRelay } from './helpers.js';

process.env.AWS_SDK_JS_SUPPRESS_NODE_VERSION_WARNING = '1';

type T = Parameters<typeof tempDir>[0];

interface Setup {
  readonly r: TestRelay;
  readonly url: URL;
  readonly owner: Device;
  /** What the store holds (local: every file under the blob directory; S3: every object). */
  readonly leftovers: () => Promise<string[]>;
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(d, e.name));
      else out.push(join(d, e.name).slice(dir.length));
    }
  };
  walk(dir);
  return out.sort();
}

const backends: Record<string, (t: T, env: Record<string, string>) => Promise<Setup>> = {
  local: async (t, env) => {
    const dir = tempDir(t);
    const r = await startRelay(t, testConfig(dir, env));
    const url = new URL(await r.relay.app.listen({ host: '127.0.0.1', port: 0 }));
    return { r, url, owner: await r.signUp(), leftovers: async () => filesUnder(join(dir, 'blobs')) };
  },
  s3: async (t, env) => {
    const dir = tempDir(t);
    const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(dir, 's3rver') });
    const { port } = (await server.run()) as unknown as { port: number };
    t.after(() => server.close());
    const endpoint = `http://127.0.0.1:${port}`;
    const c = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    t.after(() => c.destroy());
    await c.send(new CreateBucketCommand({ Bucket: 'coffer-test' }));
    const r = await startRelay(t, testConfig(dir, { COFFER_RELAY_BLOB_BACKEND: 's3', COFFER_RELAY_S3_ENDPOINT: endpoint, COFFER_RELAY_S3_BUCKET: 'coffer-test', COFFER_RELAY_S3_ACCESS_KEY_ID: 'S3RVER', COFFER_RELAY_S3_SECRET_ACCESS_KEY: 'S3RVER', ...env }));
    const url = new URL(await r.relay.app.listen({ host: '127.0.0.1', port: 0 }));
    // What S3 shows: objects. (s3rver does not implement AbortMultipartUpload, so the
    // parts of an aborted upload stay in its directory; S3 and MinIO drop them.)
    const leftovers = async (): Promise<string[]> => ((await c.send(new ListObjectsV2Command({ Bucket: 'coffer-test' }))).Contents ?? []).map((o) => o.Key ?? '');
    return { r, url, owner: await r.signUp(), leftovers };
  },
};

/** A PUT whose body is `pieces`, chunked (no content-length) unless `length` is given. */
function put(url: URL, token: string, name: string, pieces: Iterable<Buffer>, length?: number): Promise<{ status: number; code: string | undefined }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' };
    if (length !== undefined) headers['content-length'] = String(length);
    const req = request({ host: '127.0.0.1', port: url.port, path: `/v1/blobs/${name}`, method: 'PUT', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, code: text ? (JSON.parse(text) as { error?: { code?: string } }).error?.code : undefined }));
    });
    // A refusal mid-body closes the connection: the answer still counts.
    req.on('error', reject);
    const it = pieces[Symbol.iterator]();
    const pump = (): void => {
      for (let n = it.next(); !n.done; n = it.next()) if (!req.write(n.value)) return void req.once('drain', pump);
      req.end();
    };
    pump();
  });
}

async function get(url: URL, token: string, name: string, range?: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await fetch(`${url.origin}/v1/blobs/${name}`, { headers: { authorization: `Bearer ${token}`, ...(range ? { range } : {}) } });
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}

async function raw(url: URL, head: string | Buffer): Promise<{ s: Socket; got: () => string; closed: Promise<unknown> }> {
  const s = connect(Number(url.port), '127.0.0.1');
  await once(s, 'connect');
  let got = '';
  s.on('data', (d) => (got += d));
  s.on('error', () => {});
  const closed = once(s, 'close');
  s.write(head);
  return { s, got: () => got, closed };
}

const waitFor = async (pred: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
};

function* pieces(data: Buffer, size: number): Generator<Buffer> {
  for (let o = 0; o < data.length; o += size) yield data.subarray(o, o + size);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const NAME = 'data/ab/' + 'ab'.repeat(32);

for (const [backend, setup] of Object.entries(backends)) {
  describe(`streamed uploads on ${backend}`, () => {
    test('a large object without a content-length round-trips byte-exact (whole and ranges)', async (t) => {
      const s = await setup(t, { COFFER_RELAY_MAX_OBJECT_BYTES: String(64 * 1024 * 1024) });
      // Over two S3 parts (8 MiB each) and not a multiple of anything.
      const data = randomBytes(19 * 1024 * 1024 + 12345);
      assert.deepEqual(await put(s.url, s.owner.token, NAME, pieces(data, 100_003)), { status: 201, code: undefined });
      const whole = await get(s.url, s.owner.token, NAME);
      assert.equal(whole.status, 200);
      assert.equal(whole.bytes.length, data.length);
      assert.equal(sha(whole.bytes), sha(data));
      const mid = await get(s.url, s.owner.token, NAME, `bytes=${8 * 1024 * 1024 - 10}-${8 * 1024 * 1024 + 9}`);
      assert.equal(mid.status, 206);
      assert.deepEqual(mid.bytes, data.subarray(8 * 1024 * 1024 - 10, 8 * 1024 * 1024 + 10));
      const list = await fetch(`${s.url.origin}/v1/blobs?prefix=data/`, { headers: s.owner.auth() });
      assert.deepEqual(await list.json(), { blobs: [{ name: NAME, size: data.length }] });
      // With a content-length too, and small chunked bodies (S3: one PutObject).
      const small = randomBytes(70_000);
      assert.equal((await put(s.url, s.owner.token, 'index/1', pieces(small, 7), small.length)).status, 201);
      assert.equal((await put(s.url, s.owner.token, 'index/2', pieces(small, 4096))).status, 201);
      assert.equal((await put(s.url, s.owner.token, 'index/3', [])).status, 201, 'an empty chunked body is an empty object');
      assert.equal(sha((await get(s.url, s.owner.token, 'index/1')).bytes), sha(small));
      assert.equal(sha((await get(s.url, s.owner.token, 'index/2')).bytes), sha(small));
      assert.equal((await get(s.url, s.owner.token, 'index/3')).bytes.length, 0);
      assert.equal((await put(s.url, s.owner.token, 'index/2', pieces(small, 4096))).code, 'blob-exists', 'still immutable');
      assert.equal(sha((await get(s.url, s.owner.token, 'index/2')).bytes), sha(small));
    });

    test('an upload cut off mid-body (chunked or with a content-length) leaves no object and no temporary file', async (t) => {
      const s = await setup(t, {});
      for (const framing of ['chunked', 'length'] as const) {
        const head =
          `PUT /v1/blobs/${NAME} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.owner.token}\r\nContent-Type: application/octet-stream\r\n` +
          (framing === 'chunked' ? 'Transfer-Encoding: chunked\r\n\r\n' : `Content-Length: ${20 * 1024 * 1024}\r\n\r\n`);
        const c = await raw(s.url, head);
        // Well into the body (S3: past the first part, so a multipart upload was begun).
        for (let i = 0; i < 10; i++) c.s.write(framing === 'chunked' ? Buffer.concat([Buffer.from('100000\r\n'), randomBytes(1024 * 1024), Buffer.from('\r\n')]) : randomBytes(1024 * 1024));
        await new Promise((r) => setTimeout(r, 200));
        c.s.destroy();
        await waitFor(async () => (await s.leftovers()).length === 0).catch(async (e) => {
          throw new Error(`${framing}: left behind: ${(await s.leftovers()).join(', ')}`, { cause: e });
        });
        const list = await fetch(`${s.url.origin}/v1/blobs`, { headers: s.owner.auth() });
        assert.deepEqual(await list.json(), { blobs: [] }, framing);
      }
      // The name is free, and the relay's budgets were given back.
      assert.equal((await put(s.url, s.owner.token, NAME, [Buffer.from('whole')])).status, 201);
    });

    test('a chunked body above the per-object limit is refused mid-stream with 413 blob-too-large; nothing is kept', async (t) => {
      const s = await setup(t, { COFFER_RELAY_MAX_OBJECT_BYTES: String(1024 * 1024) });
      const res = await put(s.url, s.owner.token, NAME, pieces(randomBytes(3 * 1024 * 1024), 64 * 1024)).catch((e: Error) => ({ status: 0, code: e.message }));
      // The relay answers while the client still sends, and lingers (reads and discards
      // the rest, bounded) so the client reads the 413 rather than a reset connection.
      assert.deepEqual(res, { status: 413, code: 'blob-too-large' });
      await waitFor(async () => (await s.leftovers()).length === 0);
      assert.equal((await get(s.url, s.owner.token, NAME)).status, 404);
      // Exactly at the limit is fine.
      assert.equal((await put(s.url, s.owner.token, NAME, pieces(randomBytes(1024 * 1024), 50_000))).status, 201);
    });

    test('the quota holds while streaming: a chunked body crossing it is 507 quota-exceeded, nothing kept, the quota given back', async (t) => {
      const s = await setup(t, { COFFER_RELAY_QUOTA_BYTES: String(300_000) });
      assert.equal((await put(s.url, s.owner.token, 'index/1', pieces(randomBytes(200_000), 10_000))).status, 201);
      const over = await put(s.url, s.owner.token, 'index/2', pieces(randomBytes(200_000), 10_000)).catch((e: Error) => ({ status: 0, code: e.message }));
      assert.deepEqual(over, { status: 507, code: 'quota-exceeded' });
      const declared = await put(s.url, s.owner.token, 'index/3', [randomBytes(200_000)], 200_000);
      assert.deepEqual(declared, { status: 507, code: 'quota-exceeded' }, 'a declared length is refused before its body');
      // What the refused bodies had reserved is free again: exactly the rest fits.
      assert.equal((await put(s.url, s.owner.token, 'index/4', pieces(randomBytes(100_000), 10_000))).status, 201);
      assert.equal((await put(s.url, s.owner.token, 'index/5', [Buffer.from('x')])).code, 'quota-exceeded');
      const list = (await (await fetch(`${s.url.origin}/v1/blobs`, { headers: s.owner.auth() })).json()) as { blobs: { name: string }[] };
      assert.deepEqual(list.blobs.map((b) => b.name), ['index/1', 'index/4']);
    });
  });
}

describe('streamed uploads: framing and stalls', () => {
  test('garbage framing and headers are a clean 4xx, the relay keeps serving, nothing is stored', async (t) => {
    const dir = tempDir(t);
    const r = await startRelay(t, testConfig(dir, { COFFER_RELAY_BODY_IDLE_TIMEOUT_MS: '300' }, { requestTimeoutMs: 60_000 }));
    const a = await r.signUp();
    const url = new URL(await r.relay.app.listen({ host: '127.0.0.1', port: 0 }));
    const start = `PUT /v1/blobs/${NAME} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/octet-stream\r\n`;
    const cases: [string, string, RegExp][] = [
      ['a chunk size that is not hex', `${start}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`, /^HTTP\/1\.1 400 /],
      ['a chunk longer than its size', `${start}Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n`, /^HTTP\/1\.1 400 /],
      ['both content-length and chunked', `${start}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, /^HTTP\/1\.1 400 /],
      ['a negative content-length', `${start}Content-Length: -5\r\n\r\nhello`, /^HTTP\/1\.1 400 /],
      ['two different content-lengths', `${start}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`, /^HTTP\/1\.1 400 /],
      ['an unknown transfer-encoding', `${start}Transfer-Encoding: gzip\r\n\r\nhello`, /^HTTP\/1\.1 (400|501) /],
      ['a chunked body that stalls (idle timeout)', `${start}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`, /^HTTP\/1\.1 408 /],
    ];
    for (const [what, bytes, want] of cases) {
      const c = await raw(url, bytes);
      await waitFor(() => c.got().includes('\r\n\r\n')).catch(() => {});
      assert.match(c.got(), want, `${what}: ${c.got().slice(0, 60)}`);
      c.s.destroy();
    }
    assert.equal((await fetch(`${url.origin}/healthz`)).status, 200);
    assert.deepEqual(await (await fetch(`${url.origin}/v1/blobs`, { headers: a.auth() })).json(), { blobs: [] });
    assert.deepEqual(filesUnder(join(dir, 'blobs')), [], 'no temporary file left');
  });

  test('a refusal mid-body reaches a client that still sends and reads the answer late (lingering close); nothing is kept', async (t) => {
    const dir = tempDir(t);
    const r = await startRelay(t, testConfig(dir, { COFFER_RELAY_MAX_OBJECT_BYTES: String(1024 * 1024) }));
    const a = await r.signUp();
    const url = new URL(await r.relay.app.listen({ host: '127.0.0.1', port: 0 }));
    for (const [what, auth] of [['above the size limit', `Bearer ${a.token}`], ['unauthenticated', 'Bearer nope']] as const) {
      const s = connect(Number(url.port), '127.0.0.1');
      const closed = new Promise((res) => s.once('close', res));
      await once(s, 'connect');
      let failed = false;
      s.on('error', () => (failed = true));
      s.write(`PUT /v1/blobs/${NAME} HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n`);
      // The body goes on, 64 KiB at a time, while the client does not look at the answer
      // for 300 ms (a loaded client), and until it has read it.
      const chunk = Buffer.concat([Buffer.from('10000\r\n'), randomBytes(0x10000), Buffer.from('\r\n')]);
      let got = '';
      const pump = (): void => {
        while (!s.destroyed && !got.includes('}')) if (!s.write(chunk)) return void s.once('drain', pump);
      };
      pump();
      await new Promise((res) => setTimeout(res, 300));
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      await waitFor(() => got.includes('}') || s.destroyed);
      assert.equal(failed, false, `${what}: the connection was reset under the client`);
      assert.match(got, what === 'unauthenticated' ? /^HTTP\/1\.1 401 [\s\S]*"code":"unauthenticated"/ : /^HTTP\/1\.1 413 [\s\S]*connection: close[\s\S]*"code":"blob-too-large"/i, what);
      s.destroy();
      await closed;
    }
    await waitFor(() => filesUnder(join(dir, 'blobs')).length === 0);
    assert.equal((await get(url, a.token, NAME)).status, 404);
  });

  test('a chunked upload announces nothing, so it holds only the in-flight bytes it has sent', async (t) => {
    const dir = tempDir(t);
    const r = await startRelay(t, testConfig(dir, { COFFER_RELAY_MAX_OBJECT_BYTES: '100000', COFFER_RELAY_MAX_IN_FLIGHT_BYTES_PER_ACCOUNT: '100000' }));
    const a = await r.signUp();
    const url = new URL(await r.relay.app.listen({ host: '127.0.0.1', port: 0 }));
    // Three uploads of one account open at once, each part-way: none is refused, as a
    // declared 100000-byte body would have been.
    const open = await Promise.all([1, 2, 3].map((i) => raw(url, `PUT /v1/blobs/index/${i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n2710\r\n${'x'.repeat(10_000)}\r\n`)));
    await new Promise((res) => setTimeout(res, 100));
    for (const c of open) c.s.write('0\r\n\r\n');
    await waitFor(() => open.every((c) => /HTTP\/1\.1 201/.test(c.got())));
    for (const c of open) c.s.destroy();
    // Past the budget mid-stream: 429 account-uploads-busy, nothing kept.
    const big = await raw(url, `PUT /v1/blobs/index/4 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const hold = await raw(url, `PUT /v1/blobs/index/5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\nea60\r\n${'y'.repeat(60_000)}\r\n`);
    await new Promise((res) => setTimeout(res, 100));
    big.s.write(`ea60\r\n${'z'.repeat(60_000)}\r\n`);
    await waitFor(() => big.got().includes('}'));
    assert.match(big.got(), /^HTTP\/1\.1 429 [\s\S]*"code":"account-uploads-busy"/);
    hold.s.write('0\r\n\r\n');
    await waitFor(() => /HTTP\/1\.1 201/.test(hold.got()));
    big.s.destroy();
    hold.s.destroy();
    const names = ((await (await fetch(`${url.origin}/v1/blobs`, { headers: a.auth() })).json()) as { blobs: { name: string }[] }).blobs.map((b) => b.name);
    assert.deepEqual(names, ['index/1', 'index/2', 'index/3', 'index/5']);
  });
});
