// RFC 4648 §5 base64url without padding, as @serenity-kit/opaque exchanges bytes: the
// table codec in bytes.ts against Node's own encoder, and what it must refuse.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { DecodeError, fromBase64Url, toBase64Url } from '../src/index.js';

test('base64url round-trips every length 0..300 exactly as Buffer encodes it', () => {
  for (let n = 0; n <= 300; n++) {
    const bytes = randomBytes(n);
    const text = toBase64Url(bytes);
    assert.equal(text, bytes.toString('base64url'), `length ${n}`);
    assert.deepEqual(fromBase64Url(text), new Uint8Array(bytes), `length ${n}`);
  }
});

test('RFC 4648 §10 vectors (base64url alphabet, no padding)', () => {
  const vectors: [string, string][] = [['', ''], ['f', 'Zg'], ['fo', 'Zm8'], ['foo', 'Zm9v'], ['foob', 'Zm9vYg'], ['fooba', 'Zm9vYmE'], ['foobar', 'Zm9vYmFy']];
  for (const [plain, text] of vectors) {
    assert.equal(toBase64Url(new TextEncoder().encode(plain)), text);
    assert.equal(new TextDecoder().decode(fromBase64Url(text)), plain);
  }
  assert.equal(toBase64Url(Uint8Array.from([0xfb, 0xff, 0xbf])), '-_-_');
});

test('base64url refuses padding, the standard alphabet, stray characters and an impossible length', () => {
  for (const bad of ['Zg==', 'ab+c', 'ab/c', 'ab c', 'Z', 'Zm9vY', 'é']) assert.throws(() => fromBase64Url(bad, 'field'), (e: unknown) => e instanceof DecodeError && /field: not base64url/.test(e.message), bad);
});
