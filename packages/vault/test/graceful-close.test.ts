// A closing vault does not wait for the keep-alive timeout on a connection whose request
// was still arriving when close() began: once it is answered, the connection is idle and
// closed (@coffer/protocol/node, graceful-close.ts). Without the sweep this close took over a minute.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { ACCOUNT_HEADER } from '../src/server/app.js';
import { startHarness } from './helpers/vault-harness.js';

test('close() while a request body is still arriving: it is answered, then its kept-alive connection is closed and close() ends', async () => {
  const h = await startHarness();
  const url = new URL(await h.vault.app.listen({ host: '127.0.0.1', port: 0 }));
  const s = connect(Number(url.port), '127.0.0.1');
  await once(s, 'connect');
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const serverClosed = once(s, 'close');
  const requesting = once(h.vault.app.server, 'request');
  s.write(`POST /v1/request HTTP/1.1\r\nHost: x\r\n${ACCOUNT_HEADER}: acct\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n`);
  // The request is running (the server routed it) before the close begins. Not a fixed
  // sleep: on a loaded machine a request not parsed yet leaves its connection idle, and
  // the close would end it at once (the test's point is a request in flight).
  await requesting;
  let closed = false;
  const closing = h.close().then(() => (closed = true));
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(closed, false, 'close() waits for the request in flight');
  s.write('0\r\n\r\n');
  const limit = new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), 10_000).unref());
  assert.equal(await Promise.race([closing.then(() => 'closed' as const), limit]), 'closed', 'close() ended once the answer was sent');
  await serverClosed;
  assert.match(got, /^HTTP\/1\.1 400 /, 'the garbage request was answered (400) before the connection closed');
  assert.doesNotMatch(got, /connection: close/i, 'a kept-alive answer: the sweep, not the answer, closed the connection');
});
