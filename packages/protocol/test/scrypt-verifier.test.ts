// The scrypt verifier string the relay and the client share: round trip and bounds.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatScryptVerifier, parseScryptVerifier } from '../src/index.js';

test('format and parse round-trip; malformed or out-of-bounds strings are null', () => {
  const v = { N: 1 << 15, r: 8, p: 1, salt: new Uint8Array(16).fill(7), hash: new Uint8Array(32).fill(9) };
  const text = formatScryptVerifier(v);
  assert.match(text, /^scrypt\$32768\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(parseScryptVerifier(text), v);
  for (const bad of ['', 'scrypt$3$8$1$AAAA$AAAA', 'scrypt$1024$8$1$AAAA$AAAA', `scrypt$${1 << 22}$8$1$AAAA$${'A'.repeat(43)}`, 'scrypt$1024$0$1$AAAA$' + 'A'.repeat(43), 'bcrypt$x']) assert.equal(parseScryptVerifier(bad), null, bad);
});
