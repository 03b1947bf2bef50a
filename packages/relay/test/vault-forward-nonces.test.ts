// The link-MAC nonces of link-signer.ts come from a pool (one randomBytes call per
// 256 nonces): each is fresh, 16 bytes as 32 hex digits, and never handed out twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hexNonceSource } from '../src/link-signer.js';

test('pooled nonces: 16 bytes each, all distinct across several refills of the pool', () => {
  const take = hexNonceSource(16, 64);
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const n = take();
    assert.match(n, /^[0-9a-f]{32}$/);
    assert.ok(!seen.has(n), 'a nonce came twice');
    seen.add(n);
  }
});

test('pooled nonces are not all zero (the pool is wiped only behind what was handed out)', () => {
  const take = hexNonceSource(16, 64);
  for (let i = 0; i < 20; i++) assert.notEqual(take(), '0'.repeat(32));
});
