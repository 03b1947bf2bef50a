// The node:crypto provider's `hmacSha256Into` and `sha256Into` (written into the caller's
// array, the message in parts): the same bytes as node's createHmac/createHash for every
// key length around the block, every split of the message, offsets, and an output that
// aliases the key or a part.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { nodeCryptoProvider } from '../src/node/node-crypto.js';
import { cryptoProvider, hkdf, hkdfOneBlockSync, useCryptoProvider } from '../src/primitives.js';

const hmacInto = nodeCryptoProvider.hmacSha256Into!;
const sha256Into = nodeCryptoProvider.sha256Into!;
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('hmacSha256Into is RFC 2104 for keys of 0–200 bytes and messages in up to four parts', () => {
  for (let n = 0; n <= 200; n++) {
    const key = randomBytes(n);
    const data = randomBytes((n * 13) % 400); // past the module's first scratch size too
    const want = createHmac('sha256', key).update(data).digest('hex');
    const cuts = [0, (n * 7) % (data.length + 1), (n * 11) % (data.length + 1), data.length].sort((a, b) => a - b);
    const parts = [0, 1, 2].map((i) => data.subarray(cuts[i], cuts[i + 1]));
    const out = new Uint8Array(40).fill(0xee);
    hmacInto(key, out, 5, data);
    assert.equal(hex(out.subarray(5, 37)), want, `key of ${n} bytes, one part`);
    assert.ok(out.subarray(0, 5).every((x) => x === 0xee) && out.subarray(37).every((x) => x === 0xee), 'writes only its 32 bytes');
    const out2 = new Uint8Array(32);
    hmacInto(key, out2, 0, parts[0]!, parts[1]!, parts[2]!, new Uint8Array(0));
    assert.equal(hex(out2), want, `key of ${n} bytes, four parts`);
    hmacInto(key, out2, 0, parts[0]!, parts[1]!);
    assert.equal(hex(out2), createHmac('sha256', key).update(parts[0]!).update(parts[1]!).digest('hex'), `key of ${n} bytes, two parts`);
    // the old API agrees
    assert.equal(hex(nodeCryptoProvider.hmacSha256(key, data) as Uint8Array), want);
  }
  // RFC 4231 test case 2
  const out = new Uint8Array(32);
  hmacInto(new TextEncoder().encode('Jefe'), out, 0, new TextEncoder().encode('what do ya '), new TextEncoder().encode('want for nothing?'));
  assert.equal(hex(out), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
});

test('hmacSha256Into may write over its key or a part of its message', () => {
  for (const n of [16, 32, 64, 100]) {
    const key = randomBytes(n);
    const m = randomBytes(48);
    const want = createHmac('sha256', key).update(m).update(key).digest('hex');
    const buf = new Uint8Array(n + 32);
    buf.set(key);
    const k = buf.subarray(0, n);
    hmacInto(k, buf, 0, m, k);
    assert.equal(hex(buf.subarray(0, 32)), want, `out over the key (${n} bytes)`);
    const m2 = Uint8Array.from(m);
    hmacInto(key, m2, 8, m2, key);
    assert.equal(hex(m2.subarray(8, 40)), want, `out = message part (${n}-byte key)`);
  }
});

test('sha256Into writes SHA-256 at an offset, for lengths around the block', () => {
  for (let n = 0; n <= 300; n += 7) {
    const data = randomBytes(n);
    const out = new Uint8Array(70).fill(1);
    sha256Into(data, out, 33);
    assert.equal(hex(out.subarray(33, 65)), createHash('sha256').update(data).digest('hex'));
    assert.ok(out.subarray(0, 33).every((x) => x === 1) && out.subarray(65).every((x) => x === 1));
  }
});

test('hkdf with the node:crypto provider (one block through hmacSha256Into) is RFC 5869: node hkdfSync for L = 1..32 and longer', async () => {
  const before = cryptoProvider();
  useCryptoProvider(nodeCryptoProvider);
  try {
    for (let length = 1; length <= 70; length++) {
      const ikm = randomBytes(length % 3 === 0 ? 32 : 13 + length);
      const salt = randomBytes(length % 4 === 0 ? 0 : length);
      const info = randomBytes((length * 5) % 90);
      const want = Buffer.from(hkdfSync('sha256', ikm, salt, info, length)).toString('hex');
      assert.equal(hex(await hkdf(ikm, salt, info, length)), want, `L = ${length}`);
      if (length <= 32) assert.equal(hex(hkdfOneBlockSync(hmacInto, ikm, salt, info, length)), want);
    }
  } finally {
    useCryptoProvider(before);
  }
});
