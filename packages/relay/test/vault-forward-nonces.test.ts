// The link-MAC nonces of vault-forwarder.ts come from a pool (one randomBytes call per
// 256 nonces): each is fresh, its own copy, and never handed out twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nonceSource } from '../src/vault-forwarder.js';

test('pooled nonces: 16 bytes each, all distinct across several refills of the pool', () => {
  const take = nonceSource(64);
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const n = take(16);
    assert.equal(n.length, 16);
    const hex = Buffer.from(n).toString('hex');
    assert.ok(!seen.has(hex), 'a nonce came twice');
    seen.add(hex);
  }
});

test('pooled nonces are copies: changing one changes no other, and lengths above the pool still work', () => {
  const take = nonceSource(64);
  const a = take(16);
  const b = take(16);
  const before = Buffer.from(b);
  a.fill(0xff);
  assert.deepEqual(Buffer.from(b), before);
  const big = take(100);
  assert.equal(big.length, 100);
  assert.ok(big.some((x) => x !== 0));
});
