// The record's AAD (spec/vault-protocol.md §7): "coffer/vault/v1/record" ‖ 0x00 ‖
// formatVersion ‖ u16 len ‖ account (UTF-8). recordAad writes ASCII accounts straight into
// one array; these are the bytes the spec gives, built here independently, for ASCII
// accounts (every valid account ID) and for anything else (the encoder's path).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { recordAad } from '../src/core/record.js';

function reference(account: string, version: number): Uint8Array {
  const label = new TextEncoder().encode('coffer/vault/v1/record');
  const a = new TextEncoder().encode(account);
  return Uint8Array.from([...label, 0, version, a.length >> 8, a.length & 0xff, ...a]);
}

describe('recordAad', () => {
  const accounts = ['a', 'alice@example.org', 'x'.repeat(128), '~!"#$%&\'()*+,-./0123456789:;<=>?@[\\]^_`{|}', '', 'ü', 'café-ß', 'emoji-\u{1F511}', 'nul\0inside', 'y'.repeat(300)];
  for (const version of [1, 2]) {
    for (const account of accounts) {
      it(`format ${version}, ${JSON.stringify(account.length > 40 ? `${account.slice(0, 8)}…(${account.length})` : account)}: the spec's bytes`, () => {
        assert.deepEqual(recordAad(account, version), reference(account, version));
      });
    }
  }

  it('a fresh array per call (the caller may keep it)', () => {
    const a = recordAad('bob', 2);
    const b = recordAad('bob', 2);
    assert.notEqual(a, b);
    assert.notEqual(a.buffer, b.buffer);
    a.fill(0);
    assert.deepEqual(b, reference('bob', 2));
    assert.deepEqual(recordAad('bob', 2), reference('bob', 2));
  });

  it('a format version that is not a byte is refused, as before', () => {
    assert.throws(() => recordAad('bob', 256), RangeError);
    assert.throws(() => recordAad('bob', -1), RangeError);
  });
});
