/**
 * Generates spec/vectors/vault/*.json: known-answer vectors for the vault wire protocol
 * (spec/vault-protocol.md §10). Deterministic: run it twice, get the same files.
 *   npm run vectors:vault
 * Checked by test/vectors.test.ts (one table-driven test over every file).
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DEFAULT_KSF,
  ownerToken,
  sha256,
  encodeRequestBody,
  encodeResponseBody,
  fleetKeyFromPublicKey,
  fromHex,
  openRequest,
  pad,
  parseRequest,
  sealRelease,
  sealRequest,
  toHex,
  wrapBackupKey,
  type Operation,
  type VaultRequest,
  type VaultResponse,
} from '../../src/index.js';
import { dhWith, ephemeral, publicKeyOf, scalar, toJsonable, VECTOR_DIR, type Vector } from './fixtures.js';

const hex = (b: Uint8Array) => toHex(b);
const seq = (n: number, start: number) => new Uint8Array(n).map((_, i) => (start + i) & 0xff);

async function main(): Promise<void> {
  const vectors: Vector[] = [];
  const skR = scalar('fleet recipient');
  const pkR = publicKeyOf(skR);
  const fleetKey = await fleetKeyFromPublicKey(pkR);

  vectors.push({ name: 'fleet-key-id', kind: 'fleet-key-id', expect: 'success', comment: 'keyId = SHA-256("coffer/vault/v1/fleet-key-id" || 0x00 || publicKey)[0..8]', publicKey: hex(pkR), keyId: hex(fleetKey.keyId) });

  const requests: [string, VaultRequest][] = [
    ['status', { op: 'status', proof: null }],
    ['register-start', { op: 'register-start', grant: null, registrationRequest: seq(32, 1) }],
    ['register-start-with-grant', { op: 'register-start', grant: seq(16, 200), registrationRequest: seq(32, 1) }],
    ['register-finish', { op: 'register-finish', nonce: seq(16, 50), registrationRecord: seq(192, 60), ksf: DEFAULT_KSF, guessLimit: 0, wrappedKey: seq(60, 7), ownerTokenHash: seq(32, 90) }],
    ['login-start', { op: 'login-start', timestampMs: 1_767_225_600_000, ke1: seq(96, 9) }],
    ['login-finish', { op: 'login-finish', nonce: seq(16, 30), ke3: seq(64, 40) }],
    ['login-finish-abandon', { op: 'login-finish', nonce: seq(16, 30), ke3: null }],
    ['delete-no-proof', { op: 'delete', timestampMs: 1_767_225_600_000, proof: null }],
    ['delete-grant', { op: 'delete', timestampMs: 1_767_225_600_000, proof: { kind: 'grant', grant: seq(16, 70) } }],
    ['delete-with-owner-token', { op: 'delete', timestampMs: 1_767_225_600_000, proof: { kind: 'token', token: seq(32, 80) } }],
  ];
  for (const [name, req] of requests) {
    const encoded = encodeRequestBody(req);
    vectors.push({ name: `request-body-${name}`, kind: 'request-body', expect: 'success', comment: `the ${req.op} request body before padding`, op: req.op, encoded: hex(encoded), decoded: toJsonable(req) });
  }
  const badBodies: [string, Operation, string, string][] = [
    ['request-body-login-start-truncated', 'login-start', hex(encodeRequestBody(requests[4]![1]).subarray(0, 100)), 'KE1 one byte short'],
    ['request-body-status-trailing', 'status', '0000', 'a status without proof has nothing after its proof kind'],
    ['request-body-abandon-nonzero-ke3', 'login-finish', hex(new Uint8Array([...seq(16, 30), 0, ...seq(64, 1)])), 'abandon flag with a non-zero KE3 field is not canonical'],
    ['request-body-ksf-unknown-algorithm', 'register-finish', hex(encodeRequestBody(requests[3]![1])).replace(/^(.{416})01/, '$102'), 'KSF algorithm 2 is unknown'],
    ['request-body-flag-two', 'register-start', hex(new Uint8Array([2, ...new Uint8Array(48)])), 'the grant flag is 0 or 1'],
    ['request-body-delete-unknown-proof', 'delete', hex(new Uint8Array([...new Uint8Array(8), 3, ...new Uint8Array(32)])), 'delete proof kind 3 is unknown'],
    ['request-body-delete-no-proof-trailing', 'delete', '00000000000000000000', 'a delete without proof has nothing after its kind byte'],
  ];
  for (const [name, op, encoded, comment] of badBodies) vectors.push({ name, kind: 'request-body', expect: 'decode-error', comment, op, encoded });

  const responses: [string, VaultResponse][] = [
    ['status-ok', { outcome: 'ok', op: 'status', guessesRemaining: 7, guessLimit: 10, ksf: DEFAULT_KSF }],
    ['login-start-ok', { outcome: 'ok', op: 'login-start', nonce: seq(16, 3), ke2: seq(320, 5), ksf: DEFAULT_KSF }],
    ['login-finish-ok', { outcome: 'ok', op: 'login-finish', grant: seq(16, 8), releasedKey: seq(88, 11) }],
    ['register-start-ok', { outcome: 'ok', op: 'register-start', nonce: seq(16, 1), registrationResponse: seq(64, 2), guessLimit: 10 }],
    ['wrong-password', { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 3 }],
    ['locked', { outcome: 'locked', op: 'login-start' }],
    ['not-registered', { outcome: 'not-registered', op: 'status' }],
    ['rate-limited', { outcome: 'rate-limited', op: 'login-start', retryAfterSeconds: 42 }],
    ['stale', { outcome: 'stale', op: 'login-finish' }],
    ['superseded', { outcome: 'superseded', op: 'login-finish' }],
    ['proof-required', { outcome: 'proof-required', op: 'delete' }],
    ['already-registered', { outcome: 'already-registered', op: 'register-start' }],
    ['invalid', { outcome: 'invalid', op: 'register-finish', reason: 'weak-ksf' }],
  ];
  for (const [name, res] of responses) vectors.push({ name: `response-body-${name}`, kind: 'response-body', expect: 'success', comment: `${res.op} answered ${res.outcome}`, encoded: hex(encodeResponseBody(res)), decoded: toJsonable(res) });
  vectors.push({ name: 'response-body-bad-version', kind: 'response-body', expect: 'decode-error', comment: 'version 2 is unknown', encoded: '020103' });
  vectors.push({ name: 'response-body-unknown-outcome', kind: 'response-body', expect: 'decode-error', comment: 'outcome 99 is unknown', encoded: '010163' });

  // Full envelopes: request sealed with a fixed ephemeral key, response with a fixed nonce.
  const envelopes: [string, string, VaultRequest, VaultResponse, string?][] = [
    ['status', 'alice@example.org', { op: 'status', proof: null }, { outcome: 'ok', op: 'status', guessesRemaining: 10, guessLimit: 10, ksf: DEFAULT_KSF }],
    ['login-start', 'alice@example.org', requests[4]![1], { outcome: 'ok', op: 'login-start', nonce: seq(16, 3), ke2: seq(320, 5), ksf: DEFAULT_KSF }],
    ['login-finish', 'user-42', requests[5]![1], { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 9 }],
    // §3.2: a recovery's login-finish is sealed with its login-start's ephemeral key (same
    // enc, its own key schedule: the operation is in info).
    ['login-finish-same-ephemeral', 'alice@example.org', requests[5]![1], { outcome: 'wrong-password', op: 'login-finish', guessesRemaining: 9 }, 'login-start'],
  ];
  for (const [name, account, req, res, ephemeralOf] of envelopes) {
    const skE = scalar(`ephemeral ${ephemeralOf ?? name}`);
    const body = pad(encodeRequestBody(req));
    const sealed = await sealRequest(fleetKey, account, req.op, body, { ephemeral: await ephemeral(skE) });
    vectors.push({ name: `request-${name}`, kind: 'request', expect: 'success', comment: `${req.op} for ${account}`, recipientPrivateKey: hex(skR), recipientPublicKey: hex(pkR), ephemeralPrivateKey: hex(skE), account, op: req.op, body: hex(body), request: hex(sealed.bytes) });
    const opened = await openRequest(parseRequest(sealed.bytes), account, pkR, dhWith(skR));
    const nonce = seq(32, 99);
    const resBody = pad(encodeResponseBody(res));
    vectors.push({ name: `response-${name}`, kind: 'response', expect: 'success', comment: `the answer to request-${name}`, recipientPrivateKey: hex(skR), request: hex(sealed.bytes), account, responseNonce: hex(nonce), body: hex(resBody), response: hex(await opened.sealResponse(resBody, nonce)) });
    if (name === 'status') {
      const base = { recipientPrivateKey: hex(skR), recipientPublicKey: hex(pkR), ephemeralPrivateKey: hex(skE), account, op: req.op, body: hex(body) };
      vectors.push({ ...base, name: 'request-other-account', kind: 'request', expect: 'decryption-error', comment: "alice's request opened as bob's (the account is bound into HPKE info)", request: hex(sealed.bytes), openAs: { account: 'bob@example.org' } });
      const flipped = sealed.bytes.slice();
      flipped[flipped.length - 1]! ^= 1;
      vectors.push({ ...base, name: 'request-flipped-tag', kind: 'request', expect: 'decryption-error', comment: 'last tag byte flipped', request: hex(flipped) });
      const otherOp = sealed.bytes.slice();
      otherOp[1] = 6;
      vectors.push({ ...base, name: 'request-operation-swapped', kind: 'request', expect: 'decryption-error', comment: 'status re-labelled as delete (the op is bound into HPKE info)', request: hex(otherOp) });
      vectors.push({ ...base, name: 'request-truncated', kind: 'request', expect: 'decode-error', comment: 'one byte short', request: hex(sealed.bytes.subarray(0, sealed.bytes.length - 1)) });
      const v2 = sealed.bytes.slice();
      v2[0] = 2;
      vectors.push({ ...base, name: 'request-version-2', kind: 'request', expect: 'decode-error', comment: 'protocol version 2 is unknown', request: hex(v2) });
    }
  }

  const exportKey = seq(64, 17);
  const K = seq(32, 0xa0);
  const wrapNonce = seq(12, 0xc0);
  const wrapped = await wrapBackupKey(exportKey, 'alice@example.org', K, () => wrapNonce);
  vectors.push({ name: 'key-wrap', kind: 'key-wrap', expect: 'success', comment: 'K wrapped under the OPAQUE export key (spec §6)', exportKey: hex(exportKey), account: 'alice@example.org', nonce: hex(wrapNonce), backupKey: hex(K), wrapped: hex(wrapped) });
  const moved = { name: 'key-wrap-other-account', kind: 'key-wrap' as const, expect: 'decryption-error' as const, comment: 'the same wrapped key does not unwrap for another account', exportKey: hex(exportKey), account: 'bob@example.org', nonce: hex(wrapNonce), backupKey: hex(K), wrapped: hex(wrapped) };
  vectors.push(moved);
  const sessionKey = seq(64, 33);
  const relNonce = seq(12, 0xd0);
  vectors.push({ name: 'release', kind: 'release', expect: 'success', comment: 'the wrapped key released under the OPAQUE session key (spec §5.3)', sessionKey: hex(sessionKey), account: 'alice@example.org', nonce: hex(relNonce), wrappedKey: hex(wrapped), released: hex(await sealRelease(sessionKey, 'alice@example.org', wrapped, relNonce)) });

  const token = await ownerToken(K, 'alice@example.org');
  vectors.push({ name: 'owner-token', kind: 'owner-token', expect: 'success', comment: 'the owner token from K and its SHA-256, which register-finish sends (spec §5.5)', backupKey: hex(K), account: 'alice@example.org', token: hex(token), tokenHash: hex(await sha256(token)) });

  mkdirSync(VECTOR_DIR, { recursive: true });
  for (const f of readdirSync(VECTOR_DIR)) if (f.endsWith('.json')) rmSync(join(VECTOR_DIR, f));
  for (const v of vectors) writeFileSync(join(VECTOR_DIR, `${v.name}.json`), JSON.stringify(v, null, 2) + '\n');
  process.stderr.write(`wrote ${vectors.length} vectors to ${VECTOR_DIR}\n`);
  void fromHex;
}

await main();
