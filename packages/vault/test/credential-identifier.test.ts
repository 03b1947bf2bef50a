// The per-registration OPAQUE credential identifier (spec §5, label credentialIdentifier):
// registrations already stored were made under `label ‖ 0 ‖ account ‖ 0 ‖ toHex(registrationId)`,
// so however it is computed it must stay exactly that string (the hex here from node:buffer,
// not from the toHex it uses).
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LABELS } from '@coffer/protocol';
import { credentialIdentifier } from '../src/core/vault-core.js';

describe('credentialIdentifier', () => {
  it('is the label, the account and the lowercase hex of the registration ID, for every byte value', () => {
    for (let start = 0; start < 256; start += 32) {
      const id = Uint8Array.from({ length: 32 }, (_, i) => (start + i) & 0xff);
      assert.equal(credentialIdentifier('alice@example', id), `${LABELS.credentialIdentifier}\u0000alice@example\u0000${hex(id)}`);
    }
    assert.equal(credentialIdentifier('bob', new Uint8Array(0)), `${LABELS.credentialIdentifier}\u0000bob\u0000`);
    assert.equal(credentialIdentifier('bob', null), 'bob');
  });
});
