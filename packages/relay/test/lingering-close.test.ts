// Issue 13: a refusal answered while the body still arrives reaches the client as that
// refusal (lingering close, src/lingering-close.ts), and the server still reads no more
// than a bounded amount of the refused body and holds the socket a bounded time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { lingerAfterAnswer } from '../src/lingering-close.js';

const REFUSAL = '{"error":{"code":"blob-too-large"}}';

/** A server that refuses every request at once (connection: close) and counts the body bytes it reads after that. */
async function refusingServer(t: { after: (fn: () => unknown) => void }, limits: { maxBytes: number; maxMs: number } | null): Promise<{ server: Server; port: number; read: () => number; closed: Promise<unknown> }> {
  let read = 0;
  let closed!: (v: unknown) => void;
  const closedP = new Promise((r) => (closed = r));
  const server = createServer((req, res) => {
    req.socket.once('close', () => closed(undefined));
    if (limits) {
      req.on('data', (c: Buffer) => (read += c.length));
      req.pause();
      lingerAfterAnswer(req, limits);
    }
    res.writeHead(413, { 'content-type': 'application/json', 'content-length': String(REFUSAL.length), connection: 'close' });
    res.end(REFUSAL);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { server, port: (server.address() as AddressInfo).port, read: () => read, closed: closedP };
}

/**
 * A client that sends a chunked body without end, reads nothing for `deafMs` (as a
 * loaded client that has not yet got to the answer), then reads: what it read and
 * whether its writes failed.
 */
async function slowReader(port: number, deafMs: number | 'until-error', stopAfterAnswer: boolean): Promise<{ answer: string; writeFailed: boolean; wrote: number }> {
  const s = connect(port, '127.0.0.1');
  const closed = new Promise((r) => s.once('close', r));
  await once(s, 'connect');
  let answer = '';
  let writeFailed = false;
  let wrote = 0;
  let failed!: () => void;
  const failure = new Promise<void>((r) => (failed = r));
  s.on('error', () => {
    writeFailed = true;
    failed();
  });
  s.write('PUT /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
  const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000, 7), Buffer.from('\r\n')]);
  let stop = false;
  const pump = (): void => {
    while (!stop && !s.destroyed) {
      wrote += 0x10000;
      if (!s.write(chunk)) return void s.once('drain', pump);
    }
  };
  pump();
  await (deafMs === 'until-error' ? Promise.race([failure, new Promise((r) => setTimeout(r, 10_000))]) : new Promise((r) => setTimeout(r, deafMs)));
  s.on('data', (d: Buffer) => {
    answer += d.toString('latin1');
    if (stopAfterAnswer && answer.includes(REFUSAL)) {
      stop = true;
      s.destroy();
    }
  });
  await closed;
  stop = true;
  return { answer, writeFailed, wrote };
}

test('a refusal sent while the body still arrives reaches a client that reads it late (lingering close)', async (t) => {
  const srv = await refusingServer(t, { maxBytes: 64 * 1024 * 1024, maxMs: 5000 });
  const got = await slowReader(srv.port, 300, true);
  assert.match(got.answer, /^HTTP\/1\.1 413 /);
  assert.ok(got.answer.endsWith(REFUSAL), got.answer.slice(-80));
  await srv.closed;
});

test('without lingering, the same client loses the refusal to a reset connection (what the fix is for)', async (t) => {
  const srv = await refusingServer(t, null);
  // Node dumps the body it did not read and closes after the answer: the client's next
  // writes hit a reset connection, and its unread answer goes with the socket.
  const got = await slowReader(srv.port, 'until-error', true);
  assert.equal(got.writeFailed, true);
  assert.equal(got.answer, '');
});

test('lingering is bounded: a client that never stops sending is read up to maxBytes, then closed after maxMs', async (t) => {
  const maxBytes = 512 * 1024;
  const srv = await refusingServer(t, { maxBytes, maxMs: 1000 });
  // A client that reads the answer but goes on sending: the server closes on its own.
  const got = await slowReader(srv.port, 0, false);
  assert.match(got.answer, /^HTTP\/1\.1 413 /);
  await srv.closed;
  // What the server read of the body: the bound plus what was already buffered when it
  // paused (one socket read and the request's own buffer), never the client's whole stream.
  assert.ok(srv.read() <= maxBytes + 256 * 1024, `read ${srv.read()} bytes`);
  assert.ok(got.wrote > srv.read(), `the client sent ${got.wrote} bytes, the server read ${srv.read()}`);
});

test('lingering ends as soon as the client closes after reading the answer', async (t) => {
  const srv = await refusingServer(t, { maxBytes: 64 * 1024 * 1024, maxMs: 60_000 });
  const got = await slowReader(srv.port, 0, true);
  assert.ok(got.answer.endsWith(REFUSAL));
  // Closed by the client's close, long before the 60 s bound (the test would hang otherwise).
  await srv.closed;
});
