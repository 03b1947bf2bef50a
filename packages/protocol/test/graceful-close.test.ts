/**
 * closeIdleUntilClosed (node/graceful-close.ts): a close is not held for ever by a
 * request whose client stopped sending its body without closing the connection.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { test } from 'node:test';
import { closeIdleUntilClosed } from '../src/node/graceful-close.js';

/** A server whose handler reads the whole body; a client that sends 10 of 1,000,000 bytes and then nothing. */
async function stalledUpload(): Promise<{ server: Server; closed: () => Promise<number> }> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const sock = connect(port, '127.0.0.1');
  await new Promise<void>((r) => sock.once('connect', r));
  sock.on('error', () => {});
  sock.write('PUT /blob HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789');
  await new Promise((r) => setTimeout(r, 100)); // the request is running
  const closed = () => {
    const t0 = Date.now();
    return new Promise<number>((r) => server.close(() => r(Date.now() - t0))).finally(() => sock.destroy());
  };
  return { server, closed };
}

test('a request whose client stopped sending is cut after the grace period, and the close ends', async () => {
  const { server, closed } = await stalledUpload();
  closeIdleUntilClosed(server, 20, 300);
  const ms = await closed();
  assert.ok(ms >= 250 && ms < 5000, `closed after ${ms} ms`);
});

test('without the grace period the same close is still waiting after 1.5 s (the check above can fail)', async () => {
  const { server, closed } = await stalledUpload();
  closeIdleUntilClosed(server, 20, 60_000);
  const outcome = await Promise.race([closed().then(() => 'closed'), new Promise((r) => setTimeout(() => r('waiting'), 1500))]);
  assert.equal(outcome, 'waiting');
  server.closeAllConnections();
});
