// The padded response body (spec §4.1, §4.3) written into one array, and the operation
// lookup by code: the same bytes and values as before, built here independently.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BODY_SIZE, DecodeError, DEFAULT_KSF, encodePaddedResponseBody, encodeResponseBody, OPERATIONS, operationFromCode, pad, type VaultResponse } from '../src/index.js';

const z = (n: number, v = 0) => new Uint8Array(n).fill(v);
const SAMPLES: VaultResponse[] = [
  { outcome: 'ok', op: 'status', guessesRemaining: 3, guessLimit: 10, ksf: DEFAULT_KSF },
  { outcome: 'ok', op: 'status', guessesRemaining: null, guessLimit: 10, ksf: DEFAULT_KSF },
  { outcome: 'ok', op: 'register-start', nonce: z(16, 1), registrationResponse: z(64, 2), guessLimit: 10 },
  { outcome: 'ok', op: 'register-finish' },
  { outcome: 'ok', op: 'login-start', nonce: z(16, 3), ke2: z(320, 4), ksf: DEFAULT_KSF },
  { outcome: 'ok', op: 'login-finish', grant: z(16, 5), releasedKey: z(88, 6) },
  { outcome: 'ok', op: 'login-finish', grant: z(16, 5), releasedKey: z(0) },
  { outcome: 'ok', op: 'delete' },
  { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 4 },
  { outcome: 'locked', op: 'login-start' },
  { outcome: 'not-registered', op: 'status' },
  { outcome: 'rate-limited', op: 'login-start', retryAfterSeconds: 0xffff },
  { outcome: 'stale', op: 'login-finish' },
  { outcome: 'superseded', op: 'login-finish' },
  { outcome: 'proof-required', op: 'delete' },
  { outcome: 'already-registered', op: 'register-start' },
  { outcome: 'invalid', op: 'register-finish', reason: 'weak-ksf' },
];

/** §4.1 by hand: u16 length, the body, zeros to BODY_SIZE. */
function reference(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(BODY_SIZE);
  out[0] = body.length >> 8;
  out[1] = body.length & 0xff;
  out.set(body, 2);
  return out;
}

describe('encodePaddedResponseBody', () => {
  for (const r of SAMPLES) {
    it(`${r.outcome} ${r.op}: pad(encodeResponseBody(r)), the spec's layout`, () => {
      const got = encodePaddedResponseBody(r);
      assert.equal(got.length, BODY_SIZE);
      assert.deepEqual(got, pad(encodeResponseBody(r)));
      assert.deepEqual(got, reference(encodeResponseBody(r)));
    });
  }

  it('a fresh array per call, covering its whole buffer', () => {
    const r = SAMPLES[4]!;
    const a = encodePaddedResponseBody(r);
    const b = encodePaddedResponseBody(r);
    assert.notEqual(a.buffer, b.buffer);
    assert.equal(a.byteOffset, 0);
    assert.equal(a.buffer.byteLength, BODY_SIZE);
    a.fill(0xee);
    assert.deepEqual(b, pad(encodeResponseBody(r)));
  });

  it('refuses bad fields as encodeResponseBody does', () => {
    const bad: VaultResponse[] = [
      { outcome: 'ok', op: 'login-start', nonce: z(15), ke2: z(320), ksf: DEFAULT_KSF },
      { outcome: 'ok', op: 'login-start', nonce: z(16), ke2: z(321), ksf: DEFAULT_KSF },
      { outcome: 'ok', op: 'login-finish', grant: z(16), releasedKey: z(4000) },
      { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 256 },
    ];
    for (const r of bad) {
      assert.throws(() => encodeResponseBody(r), RangeError);
      assert.throws(() => encodePaddedResponseBody(r), RangeError);
    }
  });
});

describe('operationFromCode', () => {
  const byEntries = (code: number): string | undefined => Object.entries(OPERATIONS).find(([, c]) => c === code)?.[0];
  it('names every code as OPERATIONS does, and refuses every other number with unknown-operation', () => {
    const codes = [...Array.from({ length: 300 }, (_, i) => i - 20), 1.5, 4.0000001, NaN, Infinity, -Infinity, 2 ** 32 + 4];
    for (const code of codes) {
      const want = byEntries(code);
      if (want !== undefined) assert.equal(operationFromCode(code), want, String(code));
      else
        assert.throws(
          () => operationFromCode(code),
          (err: unknown) => err instanceof DecodeError && err.code === 'unknown-operation',
          String(code),
        );
    }
    for (const [name, code] of Object.entries(OPERATIONS)) assert.equal(operationFromCode(code), name);
  });
});
