// Every protocol decoder fed random and mutated bytes: it returns a value or throws a
// DecodeError / DecryptionError / ClientUsageError — never anything else, never hangs.
// Bounded here (CI); `node scripts/fuzz-vault.mjs` runs the same properties for longer.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  ByteReader,
  ClientUsageError,
  DecodeError,
  decodeKsf,
  decodeRequestBody,
  decodeResponseBody,
  DEFAULT_KSF,
  encodeRequestBody,
  encodeResponseBody,
  fromBase64Url,
  OPERATIONS,
  pad,
  parseFleetKeyBundle,
  parseRequest,
  REQUEST_LENGTH,
  unpad,
  type Operation,
  type VaultRequest,
  type VaultResponse,
} from '../src/index.js';

export const RUNS = Number(process.env.COFFER_FUZZ_RUNS ?? 1500);

function clean(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof DecodeError || err instanceof ClientUsageError) return;
    throw err;
  }
}

const ops = Object.keys(OPERATIONS) as Operation[];
const z = (n: number, v = 0) => new Uint8Array(n).fill(v);
const SAMPLE_REQUESTS: VaultRequest[] = [
  { op: 'status', proof: null },
  { op: 'delete', timestampMs: 1_700_000_000_000, proof: null },
  { op: 'delete', timestampMs: 1_700_000_000_000, proof: { kind: 'grant', grant: z(16, 8) } },
  { op: 'delete', timestampMs: 1_700_000_000_000, proof: { kind: 'token', token: z(32, 9) } },
  { op: 'register-start', grant: null, registrationRequest: z(32, 1) },
  { op: 'register-start', grant: z(16, 9), registrationRequest: z(32, 1) },
  { op: 'register-finish', nonce: z(16, 2), registrationRecord: z(192, 3), ksf: DEFAULT_KSF, guessLimit: 0, wrappedKey: z(60, 4), ownerTokenHash: z(32, 10) },
  { op: 'login-start', timestampMs: 1_700_000_000_000, ke1: z(96, 5) },
  { op: 'login-finish', nonce: z(16, 6), ke3: z(64, 7) },
  { op: 'login-finish', nonce: z(16, 6), ke3: null },
];
const SAMPLE_RESPONSES: VaultResponse[] = [
  { outcome: 'ok', op: 'status', guessesRemaining: 3, guessLimit: 10, ksf: DEFAULT_KSF },
  { outcome: 'ok', op: 'login-start', nonce: z(16), ke2: z(320, 1), ksf: DEFAULT_KSF },
  { outcome: 'ok', op: 'login-finish', grant: z(16), releasedKey: z(88, 2) },
  { outcome: 'ok', op: 'register-start', nonce: z(16), registrationResponse: z(64), guessLimit: 10 },
  { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 4 },
  { outcome: 'rate-limited', op: 'login-start', retryAfterSeconds: 30 },
  { outcome: 'invalid', op: 'register-finish', reason: 'weak-ksf' },
  { outcome: 'locked', op: 'status' },
];

/** Valid encodings, then flipped, truncated, extended or spliced. */
function mutated(seeds: Uint8Array[]): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(fc.constantFrom(...seeds), fc.nat(), fc.nat(255), fc.integer({ min: 0, max: 4 }), fc.uint8Array({ maxLength: 64 }))
    .map(([seed, at, byte, how, extra]) => {
      const s = seed.slice();
      const i = s.length === 0 ? 0 : at % s.length;
      switch (how) {
        case 0:
          if (s.length) s[i] = byte;
          return s;
        case 1:
          return s.subarray(0, i);
        case 2:
          return new Uint8Array([...s, ...extra]);
        case 3:
          return new Uint8Array([...s.subarray(0, i), ...extra, ...s.subarray(i)]);
        default:
          return new Uint8Array([...extra, ...s.subarray(i)]);
      }
    });
}

const bytes = fc.oneof(fc.uint8Array({ maxLength: 1200 }), mutated(SAMPLE_REQUESTS.map(encodeRequestBody)), mutated(SAMPLE_RESPONSES.map(encodeResponseBody)));

test('fuzz: request bodies decode cleanly for every operation', () => {
  fc.assert(fc.property(fc.constantFrom(...ops), bytes, (op, b) => clean(() => decodeRequestBody(op, b))), { numRuns: RUNS });
});

test('fuzz: response bodies decode cleanly', () => {
  fc.assert(fc.property(bytes, (b) => clean(() => decodeResponseBody(b))), { numRuns: RUNS });
});

test('fuzz: unpad, parseRequest, decodeKsf and base64url decode cleanly', () => {
  fc.assert(
    fc.property(fc.oneof(bytes, mutated([pad(new Uint8Array(10)), new Uint8Array(REQUEST_LENGTH)])), (b) => {
      clean(() => unpad(b));
      clean(() => parseRequest(b));
      clean(() => decodeKsf(new ByteReader(b)));
      clean(() => fromBase64Url(new TextDecoder().decode(b)));
    }),
    { numRuns: RUNS },
  );
});

test('fuzz: fleet key bundles parse or fail with ClientUsageError', async () => {
  const good = JSON.stringify({ version: 1, suite: 'DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM', keys: [{ keyId: '00'.repeat(8), publicKey: '04' + '11'.repeat(64) }] });
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.string({ maxLength: 300 }), fc.json(), mutated([new TextEncoder().encode(good)]).map((b) => new TextDecoder().decode(b))), async (s) => {
      try {
        await parseFleetKeyBundle(s);
      } catch (err) {
        assert.ok(err instanceof ClientUsageError, String(err));
      }
    }),
    { numRuns: Math.ceil(RUNS / 3) },
  );
});

test('every sample encoding round-trips (the fuzz seeds are valid)', () => {
  for (const r of SAMPLE_REQUESTS) assert.deepEqual(decodeRequestBody(r.op, encodeRequestBody(r)), r);
  for (const r of SAMPLE_RESPONSES) assert.deepEqual(decodeResponseBody(encodeResponseBody(r)), r);
});
