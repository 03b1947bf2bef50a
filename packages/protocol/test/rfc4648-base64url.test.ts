// RFC 4648 §5 base64url without padding, as @serenity-kit/opaque exchanges bytes: both
// codecs in bytes.ts (Node's Buffer, used where it exists, and the portable table code
// browsers run) against Node's own encoder and each other, and what they must refuse.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { DecodeError, fromBase64Url, toBase64Url } from '../src/index.js';
import { fromBase64UrlPortable, toBase64UrlPortable } from '../src/bytes.js';

const CODECS = [
  { name: 'native', to: toBase64Url, from: fromBase64Url },
  { name: 'portable', to: toBase64UrlPortable, from: fromBase64UrlPortable },
];

test('base64url round-trips every length 0..300 exactly as Buffer encodes it', () => {
  for (const c of CODECS) {
    for (let n = 0; n <= 300; n++) {
      const bytes = randomBytes(n);
      const text = c.to(bytes);
      assert.equal(text, bytes.toString('base64url'), `${c.name}: length ${n}`);
      const back = c.from(text);
      assert.deepEqual(back, new Uint8Array(bytes), `${c.name}: length ${n}`);
      // An array of its own: a decoded secret never sits in a shared pool.
      assert.equal(back.byteOffset, 0, c.name);
      assert.equal(back.buffer.byteLength, n, c.name);
    }
  }
});

test('RFC 4648 §10 vectors (base64url alphabet, no padding)', () => {
  const vectors: [string, string][] = [['', ''], ['f', 'Zg'], ['fo', 'Zm8'], ['foo', 'Zm9v'], ['foob', 'Zm9vYg'], ['fooba', 'Zm9vYmE'], ['foobar', 'Zm9vYmFy']];
  for (const c of CODECS) {
    for (const [plain, text] of vectors) {
      assert.equal(c.to(new TextEncoder().encode(plain)), text, c.name);
      assert.equal(new TextDecoder().decode(c.from(text)), plain, c.name);
    }
    assert.equal(c.to(Uint8Array.from([0xfb, 0xff, 0xbf])), '-_-_', c.name);
    // A view into a larger array encodes only its own bytes.
    assert.equal(c.to(Uint8Array.from([1, 0x66, 0x6f, 2]).subarray(1, 3)), 'Zm8', c.name);
  }
});

test('the two decoders agree on any string of the alphabet, non-canonical final bits included', () => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  for (let k = 0; k < 2000; k++) {
    const n = k % 41;
    if (n % 4 === 1) continue;
    let text = '';
    for (const b of randomBytes(n)) text += alphabet[b & 63];
    assert.deepEqual(fromBase64Url(text), fromBase64UrlPortable(text), text);
  }
});

test('base64url refuses padding, the standard alphabet, stray characters and an impossible length', () => {
  for (const c of CODECS) {
    for (const bad of ['Zg==', 'ab+c', 'ab/c', 'ab c', 'Z', 'Zm9vY', 'é']) assert.throws(() => c.from(bad, 'field'), (e: unknown) => e instanceof DecodeError && /field: not base64url/.test(e.message), `${c.name}: ${bad}`);
  }
});
