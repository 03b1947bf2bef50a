// The upload body's idle timeout (blobs/upload-meter.ts) restarts with every buffer: a
// body that keeps sending outlives it many times over; one that stops is cut off with 408.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { UploadMeter } from '../src/blobs/upload-meter.js';
import type { RelayError } from '../src/errors.js';

test('a body that keeps sending is not cut off by the idle timeout; once it stalls, it is (408 request-timeout)', async () => {
  const source = new PassThrough();
  const meter = new UploadMeter(source, { maxBytes: 1 << 20, idleMs: 300 });
  let received = 0;
  meter.on('data', (c: Buffer) => (received += c.length));
  // Ten times the idle timeout, a buffer every 60 ms.
  for (let i = 0; i < 50; i++) {
    source.write(Buffer.alloc(10, i));
    await sleep(60);
  }
  assert.equal(meter.failure, undefined, 'a steady body was cut off');
  assert.equal(received, 500);
  await sleep(1200); // stalled: well past the timeout
  assert.equal((meter.failure as RelayError | undefined)?.code, 'request-timeout');
  assert.ok(meter.destroyed);
});

test('a body that ends in time leaves no timer behind to fail it later', async () => {
  const source = new PassThrough();
  const meter = new UploadMeter(source, { maxBytes: 1 << 20, idleMs: 100, declared: 3 });
  meter.resume();
  source.end(Buffer.from('abc'));
  await new Promise((r) => meter.once('end', r));
  await sleep(400);
  assert.equal(meter.failure, undefined);
});
