/**
 * Issue 13: streamed uploads over node:http (node-transport.ts) when the server
 * misbehaves, against real sockets: an answer cut off mid-body, a kept-alive socket
 * reset between requests (retried once, then a clear error), a server that takes the
 * body and never answers or trickles its answer (the deadline holds), garbage status
 * lines and headers, an oversized answer, an untrusted TLS certificate. Each ends in a
 * clear error of the SDK's catalogue (or a CofferError('storage') from the blob backend
 * naming the object), never a hang or a crash.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { CofferError } from '@coffer/backup';
import { RelayBlobBackend } from '../src/blob-backend.js';
import { CofferClientError, UnavailableError } from '../src/errors.js';
import { NodeUploadTransport } from '../src/node-transport.js';
import { RelayHttp, type StreamedBody } from '../src/relay-http.js';

/** Runs an ES module `script` in a fresh Node process with argv[1] = `arg`; its stdout and stderr once it exits. */
async function runScript(script: string, arg: string, env: NodeJS.ProcessEnv = process.env): Promise<{ out: string; err: string }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, arg], { env });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  await once(child, 'exit');
  return { out, err };
}

const NAME = 'data/ab/' + 'ab'.repeat(32);

async function listen(t: TestContext, server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return (server.address() as AddressInfo).port;
}

/** An HTTP server whose handler sees every request (bodies read by the handler). */
async function httpServer(t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  return `http://127.0.0.1:${await listen(t, createServer(handler))}`;
}

/** A TCP server that reads a request head and its chunked body's end, then does `answer`. */
async function rawServer(t: TestContext, answer: (socket: Socket) => void): Promise<string> {
  const server = createNetServer((socket) => {
    let seen = '';
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      seen = (seen + d.toString('latin1')).slice(-16);
      if (seen.endsWith('\r\n0\r\n\r\n')) answer(socket);
    });
  });
  return `http://127.0.0.1:${await listen(t, server)}`;
}

function setup(t: TestContext, server: string, timeoutMs = 20_000): { http: RelayHttp; blobs: RelayBlobBackend } {
  const uploads = new NodeUploadTransport();
  t.after(() => uploads.close());
  const http = new RelayHttp({ server, token: () => 'cs1.test-token', uploads });
  return { http, blobs: new RelayBlobBackend(http, { timeoutMs }) };
}

async function* body(...batches: Uint8Array[][]): StreamedBody {
  for (const b of batches) yield b;
}

/** Reads a request body whole. */
async function drain(req: IncomingMessage): Promise<number> {
  let n = 0;
  for await (const c of req) n += (c as Buffer).length;
  return n;
}

async function writeObject(blobs: RelayBlobBackend, name: string, bytes: number): Promise<void> {
  const w = await blobs.create(name);
  await w.write([Buffer.alloc(bytes, 7), Buffer.alloc(16, 1)]);
  await w.commit();
}

test('an upload is one chunked PUT with the bearer token, its batches arriving whole', async (t) => {
  let got: { method?: string; url?: string; auth?: string; te?: string; bytes: number } = { bytes: 0 };
  const server = await httpServer(t, (req, res) => {
    void drain(req).then((bytes) => {
      got = { method: req.method!, url: req.url!, auth: req.headers.authorization!, te: req.headers['transfer-encoding']!, bytes };
      res.writeHead(201).end();
    });
  });
  const { http } = setup(t, server);
  const a = await http.upload({ path: `/v1/blobs/${NAME}`, body: body([Buffer.alloc(70_000, 1), Buffer.alloc(16, 2)], [Buffer.alloc(5, 3)]), signal: new AbortController().signal, pass: [] });
  assert.equal(a.status, 201);
  assert.deepEqual(got, { method: 'PUT', url: `/v1/blobs/${NAME}`, auth: 'Bearer cs1.test-token', te: 'chunked', bytes: 70_021 });
});

/** A TCP server that decodes each chunked request body: its chunks' lengths and bytes, then 201. */
async function chunkCountingServer(t: TestContext, seen: { chunks: number[]; bytes: Buffer }[]): Promise<string> {
  const server = createNetServer((socket) => {
    let buf = Buffer.alloc(0);
    let head = true;
    const mine = { chunks: [] as number[], bytes: Buffer.alloc(0) };
    const parts: Buffer[] = [];
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (head) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          buf = buf.subarray(end + 4);
          head = false;
        }
        const line = buf.indexOf('\r\n');
        if (line < 0) return;
        const size = parseInt(buf.subarray(0, line).toString('latin1'), 16);
        if (buf.length < line + 2 + size + 2) return;
        if (size === 0) {
          mine.bytes = Buffer.concat(parts);
          seen.push(mine);
          socket.end('HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          return;
        }
        mine.chunks.push(size);
        parts.push(Buffer.from(buf.subarray(line + 2, line + 2 + size)));
        buf = buf.subarray(line + 2 + size + 2);
      }
    });
  });
  return `http://127.0.0.1:${await listen(t, server)}`;
}

test('a batch of small parts (sealed segments and their tags) goes as few chunks, byte-exact, even with uploads in parallel', async (t) => {
  const seen: { chunks: number[]; bytes: Buffer }[] = [];
  const { http } = setup(t, await chunkCountingServer(t, seen));
  // Like the engine's batches: 64 KiB segments and 16-byte tags, 40 pairs a batch (2.5
  // MiB), an empty part, and a part large enough to go as it is; each upload has its
  // own byte pattern, so a gather buffer reused while still being written would show.
  const batches = (k: number): Uint8Array[][] => {
    const out: Uint8Array[][] = [];
    for (let b = 0; b < 4; b++) {
      const batch: Uint8Array[] = [];
      for (let i = 0; i < 40; i++) batch.push(Buffer.alloc(65536, (k * 31 + b * 7 + i) & 0xff), Buffer.alloc(16, (k + i) & 0xff));
      batch.push(new Uint8Array(0), Buffer.alloc(300_000, k));
      out.push(batch);
    }
    return out;
  };
  const want = [1, 2, 3].map((k) => Buffer.concat(batches(k).flat()));
  const answers = await Promise.all([1, 2, 3].map((k) => http.upload({ path: `/v1/blobs/data/aa/${k}`, body: body(...batches(k)), signal: new AbortController().signal, pass: [] })));
  assert.deepEqual(answers.map((a) => a.status), [201, 201, 201]);
  assert.equal(seen.length, 3);
  for (const got of seen) {
    const k = want.findIndex((w) => w.equals(got.bytes));
    assert.ok(k >= 0, 'an upload arrived byte-exact');
    // Per batch: 40 pairs (2,622,080 bytes) in 1 MiB gathers (3 chunks) and the large part (1).
    assert.equal(got.chunks.length, 4 * 4, `chunks: ${got.chunks.join(',')}`);
    assert.ok(got.chunks.every((c) => c <= 1024 * 1024 || c === 300_000));
  }
});

test('the server closing the connection in the middle of its answer is a clear error', async (t) => {
  const server = await rawServer(t, (socket) => {
    socket.write('HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"par');
    setTimeout(() => socket.destroy(), 20);
  });
  const { http, blobs } = setup(t, server);
  await assert.rejects(http.upload({ path: `/v1/blobs/${NAME}`, body: body([Buffer.alloc(10)]), signal: new AbortController().signal, pass: [] }), (e: unknown) => {
    assert.ok(e instanceof UnavailableError, String(e));
    assert.match((e as Error).message, /in the middle of the answer|connection reset/);
    return true;
  });
  // Through the blob backend: tried once more, then a storage error naming the object.
  await assert.rejects(writeObject(blobs, NAME, 1000), (e: unknown) => {
    assert.ok(CofferError.is(e, 'storage'), String(e));
    assert.match((e as Error).message, new RegExp(`writing ${NAME} .*(in the middle of the answer|connection reset)`));
    return true;
  });
});

test('a kept-alive connection reset between requests: the upload goes once more, on a new connection', async (t) => {
  const attempts: string[] = [];
  let connections = 0;
  const server = createServer((req, res) => {
    attempts.push(req.url!);
    // The second request on a connection finds it reset (as a server that dropped an idle socket).
    if ((req.socket as Socket & { served?: number }).served) {
      req.socket.resetAndDestroy();
      return;
    }
    (req.socket as Socket & { served?: number }).served = 1;
    void drain(req).then(() => res.writeHead(201).end());
  });
  server.on('connection', () => connections++);
  const { blobs } = setup(t, `http://127.0.0.1:${await listen(t, server)}`);
  await writeObject(blobs, 'data/aa/1', 200_000);
  await writeObject(blobs, 'data/aa/2', 200_000);
  assert.deepEqual(attempts, ['/v1/blobs/data/aa/1', '/v1/blobs/data/aa/2', '/v1/blobs/data/aa/2']);
  assert.equal(connections, 2);
});

test('a connection reset on every try is a clear storage error, after one more try', async (t) => {
  let tries = 0;
  const server = createServer((req) => {
    tries++;
    req.socket.resetAndDestroy();
  });
  const { blobs } = setup(t, `http://127.0.0.1:${await listen(t, server)}`);
  await assert.rejects(writeObject(blobs, NAME, 50_000), (e: unknown) => {
    assert.ok(CofferError.is(e, 'storage'), String(e));
    assert.match((e as Error).message, /connection reset/);
    return true;
  });
  assert.equal(tries, 2);
});

test('a server that takes the body and never answers, or trickles its answer, is ended by the deadline', async (t) => {
  const silent = await rawServer(t, () => {});
  const trickle = await rawServer(t, (socket) => {
    socket.write('HTTP/1.1 201 Created\r\ncontent-length: 1000\r\n\r\n');
    const timer = setInterval(() => socket.write('x'), 100);
    socket.on('close', () => clearInterval(timer));
  });
  for (const server of [silent, trickle]) {
    const { blobs } = setup(t, server, 700);
    const t0 = Date.now();
    await assert.rejects(writeObject(blobs, NAME, 10_000), (e: unknown) => {
      assert.ok(CofferError.is(e, 'storage'), String(e));
      assert.match((e as Error).message, /did not answer within 1 s/);
      return true;
    });
    // Two tries, each ended by its deadline (not by the server, which never ends).
    assert.ok(Date.now() - t0 >= 1400);
  }
});

test('garbage status lines and headers are a clear protocol error; odd statuses map like any other', async (t) => {
  const answers = ['HTTP/1.1 2x1 Created\r\n\r\n', 'garbage\r\n\r\n', 'HTTP/1.1 201 Created\r\nbad header line\r\n\r\n', 'HTTP/1.1 201 Created\r\ncontent-length: -5\r\n\r\n'];
  for (const raw of answers) {
    const server = await rawServer(t, (socket) => socket.end(raw));
    const { http } = setup(t, server);
    await assert.rejects(http.upload({ path: `/v1/blobs/${NAME}`, body: body([Buffer.alloc(10)]), signal: new AbortController().signal, pass: [] }), (e: unknown) => {
      assert.ok(e instanceof CofferClientError && e.code === 'protocol', `${JSON.stringify(raw)}: ${String(e)}`);
      assert.match((e as Error).message, /not valid HTTP \(HPE_/);
      return true;
    });
  }
  // A status no relay sends: the server failed (retry later), with its code.
  const odd = await rawServer(t, (socket) => socket.end('HTTP/1.1 599 Odd\r\ncontent-length: 8\r\n\r\nnot json'));
  await assert.rejects(setup(t, odd).http.upload({ path: `/v1/blobs/${NAME}`, body: body([Buffer.alloc(1)]), signal: new AbortController().signal, pass: [] }), (e: unknown) => {
    assert.ok(e instanceof UnavailableError && /599 http-599: Odd/.test(e.message), String(e));
    return true;
  });
  // An answer far larger than any relay's: refused, not read into memory.
  const huge = await rawServer(t, (socket) => {
    socket.write('HTTP/1.1 201 Created\r\ncontent-length: 10000000\r\n\r\n');
    socket.end(Buffer.alloc(10_000_000));
  });
  await assert.rejects(setup(t, huge).http.upload({ path: `/v1/blobs/${NAME}`, body: body([Buffer.alloc(1)]), signal: new AbortController().signal, pass: [] }), /over 65536 bytes/);
});

test('through fetch too: garbage, a cut-off answer and an early refusal are clear errors or the refusal itself', async (t) => {
  const viaFetch = (server: string): RelayHttp => new RelayHttp({ server, token: () => 'cs1.test-token' });
  for (const raw of ['HTTP/1.1 2x1 Created\r\n\r\n', 'garbage\r\n\r\n', 'HTTP/1.1 201 Created\r\nbad header line\r\n\r\n']) {
    const http = viaFetch(await rawServer(t, (socket) => socket.end(raw)));
    await assert.rejects(http.upload({ path: `/v1/blobs/${NAME}`, body: body([Buffer.alloc(10)]), signal: new AbortController().signal, pass: [] }), (e: unknown) => {
      assert.ok(e instanceof UnavailableError, `${JSON.stringify(raw)}: ${String(e)}`);
      assert.match((e as Error).message, /^cannot reach http:\/\/127\.0\.0\.1:\d+: \S/);
      return true;
    });
  }
  const cut = viaFetch(
    await rawServer(t, (socket) => {
      socket.write('HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"par');
      setTimeout(() => socket.destroy(), 20);
    }),
  );
  await assert.rejects(cut.upload({ path: `/v1/blobs/${NAME}`, body: body([Buffer.alloc(10)]), signal: new AbortController().signal, pass: [] }), (e: unknown) => {
    assert.ok(e instanceof UnavailableError, String(e));
    assert.match((e as Error).message, /cannot reach .*: (terminated|other side closed|connection reset)/);
    return true;
  });
  // A refusal while the body is still being sent: the refusal, not a write error.
  const early = createServer((_req, res) => void res.writeHead(413, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'blob-too-large', message: 'too large' } })));
  const http = viaFetch(`http://127.0.0.1:${await listen(t, early)}`);
  let stop = false;
  async function* endless(): StreamedBody {
    while (!stop) {
      yield [Buffer.alloc(64 * 1024)];
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  const a = await http.upload({ path: `/v1/blobs/${NAME}`, body: endless(), signal: new AbortController().signal, pass: [413] });
  stop = true;
  assert.equal(a.status, 413);
  assert.match(new TextDecoder().decode(a.body), /blob-too-large/);
});

test('an answer before the body is whole (a refusal) comes back, and the half-sent connection is not reused', async (t) => {
  let connections = 0;
  const server = createServer((req, res) => {
    if (req.url!.endsWith('/refused')) {
      res.writeHead(413, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'blob-too-large', message: 'too large' } }));
      return;
    }
    void drain(req).then(() => res.writeHead(201).end());
  });
  server.on('connection', () => connections++);
  const { http, blobs } = setup(t, `http://127.0.0.1:${await listen(t, server)}`);
  // The body never ends by itself: only the answer can end this exchange.
  let stop = false;
  async function* endless(): StreamedBody {
    while (!stop) {
      yield [Buffer.alloc(64 * 1024)];
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  const a = await http.upload({ path: '/v1/blobs/refused', body: endless(), signal: new AbortController().signal, pass: [413] });
  stop = true;
  assert.equal(a.status, 413);
  assert.match(new TextDecoder().decode(a.body), /blob-too-large/);
  await writeObject(blobs, 'data/aa/3', 1000);
  assert.equal(connections, 2);
});

test('https: a certificate the system does not trust is refused with a clear error; one trusted through NODE_EXTRA_CA_CERTS (as fetch trusts it) is used', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-transport-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { encoding: 'utf8' });
  if (r.status !== 0) return t.skip(`openssl unavailable: ${r.stderr}`);
  let reached = 0;
  const server = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (_req, res) => {
    reached++;
    res.writeHead(201).end();
  });
  server.on('tlsClientError', () => {});
  const port = await listen(t, server);
  const { http } = setup(t, `https://127.0.0.1:${port}`);
  await assert.rejects(http.upload({ path: `/v1/blobs/${NAME}`, body: body([Buffer.alloc(10)]), signal: new AbortController().signal, pass: [] }), (e: unknown) => {
    assert.ok(e instanceof UnavailableError, String(e));
    assert.match((e as Error).message, /cannot reach https:\/\/127\.0\.0\.1:\d+: self[- ]signed certificate/);
    return true;
  });
  assert.equal(reached, 0, 'no request (and no token) reached the server');
  // The same CA trusted the way fetch trusts extra CAs: a process started with
  // NODE_EXTRA_CA_CERTS uploads through it.
  const script = `
    const { NodeUploadTransport } = await import(${JSON.stringify(new URL('../src/node-transport.js', import.meta.url).href)});
    const { RelayHttp } = await import(${JSON.stringify(new URL('../src/relay-http.js', import.meta.url).href)});
    const uploads = new NodeUploadTransport();
    async function* body() { yield [new Uint8Array(100)]; }
    const a = await new RelayHttp({ server: process.argv[1], token: () => 't', uploads }).upload({ path: '/v1/blobs/x', body: body(), signal: new AbortController().signal, pass: [] });
    uploads.close();
    process.stdout.write(String(a.status));`;
  const { out, err } = await runScript(script, `https://127.0.0.1:${port}`, { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') });
  assert.equal(out, '201', err);
  assert.equal(reached, 1);
});

/** A small in-memory blob API: PUT (chunked or not), GET with ranges, HEAD, list, DELETE. */
async function blobServer(t: TestContext): Promise<{ url: string; objects: Map<string, Buffer>; seen: string[] }> {
  const objects = new Map<string, Buffer>();
  const seen: string[] = [];
  const url = await httpServer(t, (req, res) => {
    seen.push(`${req.method} ${req.url}${req.headers.range ? ` ${req.headers.range}` : ''}`);
    const u = new URL(req.url!, 'http://x');
    const name = decodeURIComponent(u.pathname.replace(/^\/v1\/blobs\/?/, ''));
    if (req.method === 'PUT') {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        objects.set(name, Buffer.concat(parts));
        res.writeHead(201).end();
      });
      return;
    }
    if (req.method === 'GET' && name === '') {
      const prefix = u.searchParams.get('prefix') ?? '';
      const blobs = [...objects].filter(([n]) => n.startsWith(prefix)).map(([n, b]) => ({ name: n, size: b.length }));
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ blobs }));
    }
    const data = objects.get(name);
    if (!data) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"blob-not-found","message":"no"}}');
    if (req.method === 'DELETE') {
      objects.delete(name);
      return void res.writeHead(204).end();
    }
    if (req.method === 'HEAD') return void res.writeHead(200, { 'content-length': data.length }).end();
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (!m) return void res.writeHead(200, { 'content-length': data.length }).end(data);
    const start = Number(m[1]);
    const end = m[2] ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
    res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${data.length}` }).end(data.subarray(start, end + 1));
  });
  return { url, objects, seen };
}

test('a process that only moves blobs (RelayBlobBackend over the Node transport, @coffer/client imported whole) loads neither undici nor OPAQUE nor web streams', async (t) => {
  // Each costs heap that keeps V8 starting full collections through a backup to
  // coffer: (issue 13): the blob API's every request goes over node:http,
  // @coffer/protocol loads @serenity-kit/opaque only for a flow that runs OPAQUE, and
  // RelayHttp looks at the global ReadableStream only for a body that reads like one.
  const { url, objects } = await blobServer(t);
  const script = `
    const client = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
    const { NodeUploadTransport } = await import(${JSON.stringify(new URL('../src/node-transport.js', import.meta.url).href)});
    const { createRequire } = await import('node:module');
    const uploads = new NodeUploadTransport();
    const blobs = new client.RelayBlobBackend(new client.RelayHttp({ server: process.argv[1], token: () => 't', uploads }));
    const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
    await blobs.put('config', [new Uint8Array([1, 2, 3])]);
    const w = await blobs.create('data/aa/1');
    await w.write([big.subarray(0, 1000000), big.subarray(1000000)]);
    await w.commit();
    const out = {
      config: [...(await blobs.get('config'))],
      whole: Buffer.from(await blobs.get('data/aa/1')).equals(big),
      ranges: Buffer.concat([await blobs.get('data/aa/1', { offset: 5, length: 300000 }), await blobs.get('data/aa/1', { offset: 300005, length: 300000 })]).equals(big.subarray(5, 600005)),
      stat: await blobs.stat('data/aa/1'),
      missing: await blobs.stat('data/aa/2'),
      list: (await blobs.list('data/')).map((b) => b.name),
    };
    await blobs.delete('config');
    uploads.close();
    const cjs = Object.keys(createRequire(import.meta.url).cache);
    out.undici = process.moduleLoadList.some((m) => m.includes('undici'));
    out.webStreams = process.moduleLoadList.filter((m) => m.endsWith('webstreams/readablestream') || m.endsWith('webstreams/writablestream'));
    out.opaque = cjs.some((k) => k.includes('@serenity-kit'));
    process.stdout.write(JSON.stringify(out));`;
  const { out, err } = await runScript(script, url);
  const r = JSON.parse(out || '{}') as Record<string, unknown>;
  assert.deepEqual(r.config, [1, 2, 3], err);
  assert.equal(r.whole, true);
  assert.equal(r.ranges, true);
  assert.deepEqual(r.stat, { name: 'data/aa/1', size: 3 * 1024 * 1024 });
  assert.equal(r.missing, null);
  assert.deepEqual(r.list, ['data/aa/1']);
  assert.deepEqual([...objects.keys()], ['data/aa/1']);
  assert.equal(r.undici, false, 'undici was loaded');
  assert.deepEqual(r.webStreams, [], 'web streams were loaded');
  assert.equal(r.opaque, false, '@serenity-kit/opaque was loaded');
});

test('a GET on a kept-alive connection the server had closed goes once more, on a new connection; a POST does not', async (t) => {
  const seen: string[] = [];
  let connections = 0;
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    // The second request on a connection finds it reset (as a server that dropped an idle socket).
    if ((req.socket as Socket & { served?: number }).served) {
      req.socket.resetAndDestroy();
      return;
    }
    (req.socket as Socket & { served?: number }).served = 1;
    void drain(req).then(() => res.writeHead(200, { 'content-type': 'application/json', 'content-length': 12 }).end('{"blobs":[]}'));
  });
  server.on('connection', () => connections++);
  const { http, blobs } = setup(t, `http://127.0.0.1:${await listen(t, server)}`);
  assert.deepEqual(await blobs.list('a'), []);
  assert.deepEqual(await blobs.list('b'), []);
  assert.deepEqual(seen, ['GET /v1/blobs?prefix=a', 'GET /v1/blobs?prefix=b', 'GET /v1/blobs?prefix=b']);
  assert.equal(connections, 2);
  // Not idempotent: the reset is the caller's to see.
  await assert.rejects(http.vault(new Uint8Array(10)), (e: unknown) => {
    assert.ok(e instanceof UnavailableError, String(e));
    assert.match((e as Error).message, /connection reset/);
    return true;
  });
});

test('through the Node transport: a redirect is not followed (the token stays), and a body that stalls is ended by the deadline', async (t) => {
  let stolen = 0;
  const elsewhere = await httpServer(t, (req, res) => {
    if (req.headers.authorization) stolen++;
    res.end('{}');
  });
  const redirecting = await httpServer(t, (_req, res) => void res.writeHead(307, { location: `${elsewhere}/v1/vault` }).end());
  await assert.rejects(setup(t, redirecting).http.vault(new Uint8Array(603)));
  await assert.rejects(setup(t, redirecting).blobs.get(NAME), (e: unknown) => CofferError.is(e, 'storage'));
  assert.equal(stolen, 0);
  // Headers, a few bytes of the body, then nothing: the read ends with the deadline.
  const stalls = await httpServer(t, (_req, res) => {
    res.writeHead(200, { 'content-length': 1000 });
    res.write('x'.repeat(10));
  });
  await assert.rejects(setup(t, stalls, 300).blobs.get(NAME), (e: unknown) => {
    assert.ok(CofferError.is(e, 'storage'), String(e));
    assert.match((e as Error).message, new RegExp(`reading ${NAME}`));
    return true;
  });
});

test('an upload keeps its own copy of the bytes: the parts handed over may change after write, and a second try sends the object as written', async (t) => {
  const received: Buffer[] = [];
  let tries = 0;
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      received.push(Buffer.concat(parts));
      // The first try is cut off after its body arrived: commit sends the object once more.
      if (++tries === 1) return void req.socket.resetAndDestroy();
      res.writeHead(201).end();
    });
  });
  const { blobs } = setup(t, `http://127.0.0.1:${await listen(t, server)}`);
  const expected: Buffer[] = [];
  const w = await blobs.create(NAME);
  for (let i = 0; i < 5; i++) {
    // Parts of many sizes, across the copy's 1 MiB blocks; each overwritten once handed over.
    const parts = [Buffer.alloc(700_000 + i * 1000, i + 1), Buffer.alloc(16, 100 + i), Buffer.alloc(300_001, 200 + i)];
    expected.push(...parts.map((p) => Buffer.from(p)));
    await w.write(parts);
    for (const p of parts) p.fill(0xee);
  }
  await w.commit();
  assert.equal(tries, 2);
  const want = Buffer.concat(expected);
  assert.ok(received[1]!.equals(want), 'the second try sent the object as written');
  assert.ok(received[0]!.equals(want), 'so did the first');
});

test('a pack read in 1 MiB pieces is one GET, its short last piece included, and the open GET keeps no process alive', async (t) => {
  const { url, objects, seen } = await blobServer(t);
  const pack = Buffer.alloc(3 * 1024 * 1024 + 2345);
  for (let i = 0; i < pack.length; i++) pack[i] = (i * 7) % 253;
  objects.set('data/aa/1', pack);
  const { blobs } = setup(t, url);
  // As restore reads a pack: whole pieces, then the rest and one byte more.
  const MiB = 1024 * 1024;
  const pieces = [];
  for (let off = 0; off < pack.length; off += MiB) pieces.push(await blobs.get('data/aa/1', { offset: off, length: Math.min(MiB, pack.length - off) + (off + MiB >= pack.length ? 1 : 0) }));
  assert.ok(Buffer.concat(pieces).equals(pack));
  assert.deepEqual(seen, ['GET /v1/blobs/data/aa/1 bytes=0-']);
  // A process whose reads are done exits at once: the timer that closes an idle open GET
  // (here after the first piece of three) does not hold it.
  const script = `
    const { RelayBlobBackend } = await import(${JSON.stringify(new URL('../src/blob-backend.js', import.meta.url).href)});
    const { RelayHttp } = await import(${JSON.stringify(new URL('../src/relay-http.js', import.meta.url).href)});
    const { NodeUploadTransport } = await import(${JSON.stringify(new URL('../src/node-transport.js', import.meta.url).href)});
    const blobs = new RelayBlobBackend(new RelayHttp({ server: process.argv[1], token: () => 't', uploads: new NodeUploadTransport() }));
    const first = await blobs.get('data/aa/1', { offset: 0, length: 1024 * 1024 });
    await new Promise((r) => setImmediate(r));
    process.stdout.write(JSON.stringify({ bytes: first.length, timers: process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length }));`;
  const { out, err } = await runScript(script, url);
  assert.deepEqual(JSON.parse(out || '{}'), { bytes: 1024 * 1024, timers: 0 }, err);
});

test('through the Node transport a request body is framed whatever the method: a DELETE with a proof arrives whole', async (t) => {
  const got: { method: string; length: string | undefined; body: string }[] = [];
  const url = await httpServer(t, (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      got.push({ method: req.method!, length: req.headers['content-length'], body });
      res.writeHead(204).end();
    });
  });
  const { http } = setup(t, url);
  await http.removeDeviceKey('acct', 'key-1', { currentPassword: 'pw é' });
  const body = JSON.stringify({ currentPassword: 'pw é' });
  assert.deepEqual(got, [{ method: 'DELETE', length: String(Buffer.byteLength(body)), body }]);
});

test('requests do not wait for sockets that open read-ahead GETs or uploads hold', async (t) => {
  const events: string[] = [];
  const url = await httpServer(t, (req, res) => {
    events.push(`${req.method} ${req.url}`);
    req.socket.once('close', () => events.push('close'));
    if (req.method === 'HEAD') return void res.writeHead(200, { 'content-length': 5 }).end();
    // A large object that goes on arriving: its read-ahead GET stays open.
    res.writeHead(206, { 'content-length': 1 << 30, 'content-range': `bytes 0-${(1 << 30) - 1}/${1 << 30}` });
    res.write(Buffer.alloc(2 * 1024 * 1024, 1));
  });
  const { blobs } = setup(t, url);
  // As many open read-aheads as the backend keeps, each holding a socket.
  for (let i = 0; i < 4; i++) assert.equal((await blobs.get(`data/aa/${i}`, { offset: 0, length: 1024 * 1024 })).length, 1024 * 1024);
  assert.deepEqual(await blobs.stat('locks/1'), { name: 'locks/1', size: 5 });
  assert.equal(events.indexOf('close'), -1, `no socket had to close first: ${events.join(', ')}`);
});
