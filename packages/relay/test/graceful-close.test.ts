// A closing relay does not wait for the keep-alive timeout (65 s) on a connection whose
// request was still running when close() began: once its answer is sent, the connection
// is idle and closed (@coffer/protocol/node, graceful-close.ts). Without the sweep, this close took ~65 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { startRelay, tempDir, testConfig } from './helpers.js';

test('close() during an upload: the upload is answered, then its kept-alive connection is closed and close() ends (not after the 65 s keep-alive timeout)', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const url = new URL(await r.relay.app.listen({ host: '127.0.0.1', port: 0 }));
  const owner = await r.signUp();
  const s = connect(Number(url.port), '127.0.0.1');
  await once(s, 'connect');
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const serverClosed = once(s, 'close');
  const requesting = once(r.relay.app.server, 'request');
  s.write(`PUT /v1/blobs/index/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${owner.token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
  // The request is running (the server routed it) before the close begins. Not a fixed
  // sleep: on a loaded machine a request not parsed yet leaves its connection idle, and
  // the close would end it at once (the test's point is a request in flight).
  await requesting;
  let closed = false;
  const closing = r.relay.close().then(() => (closed = true));
  // The relay is closing and the upload still runs: it must not be cut off.
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(closed, false, 'close() waits for the request in flight');
  s.write('0\r\n\r\n');
  const limit = new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), 10_000).unref());
  assert.equal(await Promise.race([closing.then(() => 'closed' as const), limit]), 'closed', 'close() ended once the answer was sent');
  await serverClosed;
  assert.match(got, /^HTTP\/1\.1 201 /, 'the upload was answered before the connection closed');
  assert.doesNotMatch(got, /connection: close/i, 'a kept-alive answer: the sweep, not the answer, closed the connection');
});
