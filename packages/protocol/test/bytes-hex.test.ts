// toHex: lowercase, two digits a byte, for every byte value and for inputs longer than the
// pieces it builds its string in (8,192 characters); fromHex reads it back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { fromHex, toHex } from '../src/index.js';

test('toHex equals node:buffer\'s hex for every byte value, empty input and long inputs', () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.equal(toHex(all), Buffer.from(all).toString('hex'));
  assert.equal(toHex(new Uint8Array(0)), '');
  for (const n of [1, 4095, 4096, 4097, 8192, 100_003]) {
    const b = randomBytes(n);
    assert.equal(toHex(b), b.toString('hex'), `${n} bytes`);
    assert.deepEqual(fromHex(toHex(b)), new Uint8Array(b));
  }
  // A view into a larger buffer: only its own bytes.
  const big = randomBytes(64);
  assert.equal(toHex(big.subarray(10, 42)), big.subarray(10, 42).toString('hex'));
});
