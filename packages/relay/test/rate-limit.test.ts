/** TokenBuckets: a bounded map that never forgets an active bucket. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TokenBuckets } from '../src/index.js';

test('a full map of active buckets refuses new keys instead of forgetting a spent bucket', () => {
  let now = 1_000_000;
  const b = new TokenBuckets({ perSecond: 1 / 60, burst: 3 }, { now: () => now, maxKeys: 4 });
  for (let i = 0; i < 3; i++) assert.equal(b.take('victim'), 0);
  assert.ok(b.take('victim') > 0);
  // An attacker sprays fresh keys: the map fills, then new keys are refused.
  for (let i = 0; i < 3; i++) assert.equal(b.take(`fake-${i}`), 0);
  for (let i = 3; i < 50; i++) assert.ok(b.take(`fake-${i}`) >= 1, `fake-${i} should be refused`);
  assert.equal(b.size, 4);
  // The victim's bucket is still spent.
  assert.ok(b.take('victim') > 0);
  // Once a bucket has refilled completely it carries no state and may go.
  now += 3 * 60_000;
  assert.equal(b.take('newcomer'), 0);
  assert.ok(b.size <= 4);
});

test('refilled buckets are dropped when the map is full', () => {
  let now = 0;
  const b = new TokenBuckets({ perSecond: 1, burst: 2 }, { now: () => now, maxKeys: 3 });
  for (const k of ['a', 'b', 'c']) assert.equal(b.take(k), 0);
  assert.ok(b.take('d') >= 1);
  now += 1_000; // all refilled
  assert.equal(b.take('d'), 0);
  assert.equal(b.size, 1);
});
