// The record tree's bucket hash (spec/vault-protocol.md §13.3):
//   SHA-256(0x00 ‖ for each (account, digest), sorted by account: u16 BE len(account) ‖ account ‖ digest)
// with the account in UTF-8. bucketHash writes ASCII accounts straight into its input; these
// are the spec's bytes built independently with node's createHash and TextEncoder, for
// one and several accounts, ASCII (every valid account ID) and not.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { toHex, useCryptoProvider } from '@coffer/protocol';
import { nodeCryptoProvider } from '../src/server/node-crypto.js';
import { bucketHash } from '../src/core/rollback.js';

function reference(entries: ReadonlyArray<readonly [string, Uint8Array]>): string {
  const h = createHash('sha256').update(new Uint8Array([0]));
  for (const [account, digest] of [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const a = new TextEncoder().encode(account);
    h.update(new Uint8Array([a.length >> 8, a.length & 0xff])).update(a).update(digest);
  }
  return h.digest('hex');
}

const digest = (s: string): Uint8Array => new Uint8Array(createHash('sha256').update(s).digest());

describe('bucketHash', () => {
  useCryptoProvider(nodeCryptoProvider);
  const cases: Array<[string, Array<[string, Uint8Array]>]> = [
    ['empty bucket', []],
    ['one ASCII account', [['alice', digest('a')]]],
    ['one 128-character account', [['x'.repeat(128), digest('x')]]],
    ['one 300-character account', [['y'.repeat(300), digest('y')]]],
    ['three ASCII accounts, given unsorted', [['carol', digest('c')], ['alice', digest('a')], ['bob', digest('b')]]],
    ['one non-ASCII account', [['café-ß', digest('é')]]],
    ['ASCII and non-ASCII, unsorted', [['zoë', digest('z')], ['alice', digest('a')], ['emoji-\u{1F511}', digest('k')]]],
    ['printable ASCII punctuation', [['~!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}', digest('p')], ['0123456789', digest('n')]]],
  ];
  for (const [name, entries] of cases) {
    it(`${name}: the spec's bytes`, async () => {
      assert.equal(toHex(await bucketHash(entries)), reference(entries));
      assert.equal(toHex(await bucketHash(new Map(entries))), reference(entries), 'from a Map, as the tree holds them');
    });
  }
});
