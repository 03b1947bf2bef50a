// requestTimeoutMs ends a request whose body trickles in, also when it is below Node's
// 60 s headersTimeout (which Node would otherwise apply to the body instead).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { buildApp } from '../src/app.js';
import { LocalBlobStore } from '../src/blobs/local.js';
import { createMetrics } from '../src/metrics.js';
import { VaultForwarder } from '../src/vault-forwarder.js';
import { tempDir } from './helpers.js';

test('a body that keeps trickling in is ended at requestTimeoutMs (below 60 s) with a catalogue 408', async (t) => {
  const metrics = createMetrics({ defaultMetrics: false });
  const app = buildApp({
    accounts: null,
    jwt: null,
    forwarder: new VaultForwarder({ nodes: ['http://127.0.0.1:9'], linkKey: new Uint8Array(32), metrics }),
    blobs: new LocalBlobStore(tempDir(t)),
    metrics,
    requestTimeoutMs: 100,
  });
  t.after(() => app.close());
  const url = new URL(await app.listen({ host: '127.0.0.1', port: 0 }));
  assert.equal(app.server.headersTimeout, 100);
  const s = connect(Number(url.port), '127.0.0.1');
  await once(s, 'connect');
  let got = '';
  let closed = false;
  s.on('data', (d) => (got += d));
  s.on('error', () => {});
  s.on('close', () => (closed = true));
  s.write('POST /v1/sessions/challenge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n');
  // One byte every 50 ms, never idle for long: only the whole-request timeout can end it
  // (checked every second). Before the fix it ran for 60 s; 6 s of it fail the test.
  const end = Date.now() + 6000;
  while (!closed && !got.includes('}') && Date.now() < end) {
    s.write(' ');
    await new Promise((res) => setTimeout(res, 50));
  }
  s.destroy();
  assert.match(got, /^HTTP\/1\.1 408 /, 'the trickling request was not ended');
  assert.equal(JSON.parse(got.split('\r\n\r\n')[1]!).error.code, 'request-timeout');
});
