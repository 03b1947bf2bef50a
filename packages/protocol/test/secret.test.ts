// Secrets print as [redacted] through every path a log could take.
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { test } from 'node:test';
import { Secret } from '../src/index.js';

test('Secret hides its value from JSON, string conversion and inspect', () => {
  const s = new Secret(new Uint8Array([1, 2, 3]));
  assert.equal(JSON.stringify({ s }), '{"s":"[redacted]"}');
  assert.equal(String(s), '[redacted]');
  assert.equal(`${s}`, '[redacted]');
  assert.equal(inspect(s), '[redacted]');
  assert.equal(inspect({ nested: { s } }, { depth: 5 }), '{ nested: { s: [redacted] } }');
  assert.deepEqual(s.expose(), new Uint8Array([1, 2, 3]));
});
