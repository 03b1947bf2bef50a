// Bad input at the HTTP boundary: every malformed request is a clean 4xx from the error
// catalogue, and none changes a stored record (issue 3 "Bad input").
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { pad, REQUEST_LENGTH, sealRequest, toHex } from '@coffer/protocol';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { raw } from './helpers/raw-requests.js';

describe('bad input to coffer-vault', () => {
  let h: Harness;
  let valid: Uint8Array;
  let snapshot: string;
  before(async () => {
    h = await startHarness();
    await h.client('alice').register('pw', KEY_K);
    snapshot = toHex((await h.stored('alice'))!);
    valid = (await raw(h, 'alice', { op: 'delete', timestampMs: Date.now(), proof: null })).sealed.bytes;
  });
  after(async () => {
    assert.equal(toHex((await h.stored('alice'))!), snapshot, 'no bad request changed the record');
    assert.equal(await h.metric('coffer_vault_guesses_counted_total'), 0);
    await h.close();
  });

  const cases: [string, () => Promise<{ status: number; json: () => { error: { code: string } } }>, number, string][] = [
    ['random bytes of the right length', () => h.post('alice', randomBytes(REQUEST_LENGTH)), 400, ''],
    ['truncated by one byte', () => h.post('alice', valid.subarray(0, valid.length - 1)), 400, 'bad-length'],
    ['one byte appended', () => h.post('alice', Buffer.concat([valid, Buffer.from([0])])), 400, 'bad-length'],
    ['empty body', () => h.post('alice', new Uint8Array(0)), 400, 'bad-length'],
    ['oversized body', () => h.post('alice', randomBytes(64 * 1024)), 413, 'body-too-large'],
    ['wrong protocol version', () => h.post('alice', Buffer.concat([Buffer.from([2]), valid.subarray(1)])), 400, 'bad-version'],
    ['unknown operation', () => h.post('alice', Buffer.concat([valid.subarray(0, 1), Buffer.from([99]), valid.subarray(2)])), 400, 'unknown-operation'],
    ['operation changed to another valid one', () => h.post('alice', Buffer.concat([valid.subarray(0, 1), Buffer.from([1]), valid.subarray(2)])), 400, 'undecryptable'],
    ['a flipped ciphertext bit', () => { const b = Buffer.from(valid); b[b.length - 3]! ^= 4; return h.post('alice', b); }, 400, 'undecryptable'],
    ['enc not on the curve', () => { const b = Buffer.from(valid); b[10 + 64]! ^= 1; return h.post('alice', b); }, 400, 'undecryptable'],
    ["alice's request forwarded as bob's", () => h.post('bob', valid), 400, 'undecryptable'],
    ['no account header', () => h.post(null, valid), 400, 'bad-account'],
    ['an account with a space', () => h.post('al ice', valid), 400, 'bad-account'],
    ['a 129-character account', () => h.post('a'.repeat(129), valid), 400, 'bad-account'],
    ['text/plain body', () => h.post('alice', 'hello', 'text/plain'), 415, 'unsupported-media-type'],
    ['JSON body', () => h.post('alice', '{}', 'application/json'), 415, 'unsupported-media-type'],
  ];
  for (const [name, send, status, code] of cases) {
    it(`${name} → ${status}${code ? ` ${code}` : ''}`, async () => {
      const res = await send();
      assert.equal(res.status, status);
      const body = res.json();
      if (code) assert.equal(body.error.code, code);
      else assert.match(body.error.code, /^(bad-version|unknown-operation|unknown-fleet-key|undecryptable)$/);
    });
  }

  it('an unknown path is a 404 from the catalogue', async () => {
    const res = await h.vault.app.inject({ method: 'GET', url: '/v1/nope' });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().error.code, 'not-found');
  });

  it('a path with a malformed percent-escape is the catalogue 404, not Fastify\'s own body', async () => {
    const res = await h.vault.app.inject({ method: 'POST', url: '/v1/request%zz' });
    assert.equal(res.statusCode, 404);
    assert.deepEqual(res.json(), { error: { code: 'not-found', message: 'no such endpoint', retry: false } });
  });

  it('a well-sealed body that does not parse is answered `invalid` inside the envelope', async () => {
    const junk = pad(new Uint8Array([1, 2, 3]));
    const sealed = await sealRequest(h.vault.fleet.fleetKey, 'alice', 'login-start', junk);
    const res = await h.post('alice', sealed.bytes);
    assert.equal(res.status, 200);
    const { decodeResponseBody, unpad } = await import('@coffer/protocol');
    const answer = decodeResponseBody(unpad(await sealed.openResponse(new Uint8Array(res.body))));
    assert.deepEqual(answer, { outcome: 'invalid', op: 'login-start', reason: 'bad-body' });
  });

  it('non-canonical padding inside the envelope is `invalid`', async () => {
    const body = pad(new Uint8Array(0));
    body[511] = 1;
    const sealed = await sealRequest(h.vault.fleet.fleetKey, 'alice', 'status', body);
    const res = await h.post('alice', sealed.bytes);
    const { decodeResponseBody, unpad } = await import('@coffer/protocol');
    assert.equal(decodeResponseBody(unpad(await sealed.openResponse(new Uint8Array(res.body)))).outcome, 'invalid');
  });
});
