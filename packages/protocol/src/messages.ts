/**
 * The vault's request and response bodies: what travels *inside* the HPKE envelope.
 * Every body is padded to one fixed size (spec/vault-protocol.md §4), so the carrier
 * learns nothing from lengths. Business outcomes are values of `VaultResponse`.
 */
import { ByteReader, ByteWriter, writePadded } from './bytes.js';
import { DecodeError } from './errors.js';
import { decodeKsf, encodeKsf, type KsfParams } from './ksf.js';

export const PROTOCOL_VERSION = 1;

/** Fixed padded size of every request and response body, before AEAD. */
export const BODY_SIZE = 512;

/** RFC 9807 sizes for the ristretto255-SHA512 suite, as @serenity-kit/opaque emits them. */
export const SIZES = {
  nonce: 16,
  registrationRequest: 32,
  registrationResponse: 64,
  registrationRecord: 192,
  ke1: 96,
  ke2: 320,
  ke3: 64,
  /** Upper bound of the client's wrapped backup key (the vault stores it opaquely). */
  wrappedKeyMax: 128,
  /** AES-256-GCM nonce + wrapped key + tag. */
  releasedKeyMax: 12 + 128 + 16,
  ownerToken: 32,
  ownerTokenHash: 32,
  /** A registration's random ID, part of its OPAQUE credential identifier (spec §5.1). */
  registrationId: 32,
} as const;

export const OPERATIONS = {
  status: 1,
  'register-start': 2,
  'register-finish': 3,
  'login-start': 4,
  'login-finish': 5,
  delete: 6,
} as const;
export type Operation = keyof typeof OPERATIONS;

export function operationCode(op: Operation): number {
  return OPERATIONS[op];
}

/** Operation names by code (codes are small integers), built once: no `Object.entries` per request. */
const OPERATION_BY_CODE: readonly (Operation | undefined)[] = (() => {
  const byCode: (Operation | undefined)[] = [];
  for (const [name, c] of Object.entries(OPERATIONS)) byCode[c] = name as Operation;
  return byCode;
})();

export function operationFromCode(code: number): Operation {
  const name = Number.isInteger(code) && code >= 0 ? OPERATION_BY_CODE[code] : undefined;
  if (name !== undefined) return name;
  throw new DecodeError(`operation: unknown code ${code}`, 'unknown-operation');
}

export type VaultRequest =
  /** With proof (K's owner token or a fresh grant) the answer includes the guesses left. */
  | { readonly op: 'status'; readonly proof: OwnerProof | null }
  | { readonly op: 'register-start'; readonly grant: Uint8Array | null; readonly registrationRequest: Uint8Array }
  | {
      readonly op: 'register-finish';
      readonly nonce: Uint8Array;
      readonly registrationRecord: Uint8Array;
      readonly ksf: KsfParams;
      /** 0 asks for the deployment's limit; otherwise 1..limit. */
      readonly guessLimit: number;
      readonly wrappedKey: Uint8Array;
      /** SHA-256 of the owner token derived from K (key-wrap.ts `ownerToken`). */
      readonly ownerTokenHash: Uint8Array;
    }
  | { readonly op: 'login-start'; readonly timestampMs: number; readonly ke1: Uint8Array }
  /** `ke3 === null`: the client could not open the envelope (wrong password) and abandons. */
  | { readonly op: 'login-finish'; readonly nonce: Uint8Array; readonly ke3: Uint8Array | null }
  /** Deleting an active record needs proof: a fresh login's grant, or the owner token from K. */
  /**
   * `timestampMs`: the client's clock; the vault refuses it outside its freshness window
   * and deletes only records registered before it, so a captured delete replayed later
   * cannot erase a record the user registered again with the same K.
   */
  | { readonly op: 'delete'; readonly timestampMs: number; readonly proof: OwnerProof | null };

export type OwnerProof = { readonly kind: 'grant'; readonly grant: Uint8Array } | { readonly kind: 'token'; readonly token: Uint8Array };
const OWNER_PROOF_KINDS = { grant: 1, token: 2 } as const;

export const OUTCOMES = {
  ok: 1,
  'wrong-password': 2,
  locked: 3,
  'not-registered': 4,
  'rate-limited': 5,
  stale: 6,
  'already-registered': 7,
  invalid: 8,
  /** login-finish: another login for this account started after this one and replaced it. */
  superseded: 9,
  /** delete: an active record is deleted only with a valid grant or owner token. */
  'proof-required': 10,
} as const;
export type OutcomeName = keyof typeof OUTCOMES;

/** Why an `invalid` request was refused (inside the envelope, only the requester sees it). */
export const INVALID_REASONS = { 'bad-body': 1, 'weak-ksf': 2, 'bad-guess-limit': 3 } as const;
export type InvalidReason = keyof typeof INVALID_REASONS;

export type OkResponse =
  /** `guessesRemaining` is null unless the request proved ownership (spec §5.5). */
  | { readonly op: 'status'; readonly guessesRemaining: number | null; readonly guessLimit: number; readonly ksf: KsfParams }
  | { readonly op: 'register-start'; readonly nonce: Uint8Array; readonly registrationResponse: Uint8Array; readonly guessLimit: number }
  | { readonly op: 'register-finish' }
  | { readonly op: 'login-start'; readonly nonce: Uint8Array; readonly ke2: Uint8Array; readonly ksf: KsfParams }
  | { readonly op: 'login-finish'; readonly grant: Uint8Array; readonly releasedKey: Uint8Array }
  | { readonly op: 'delete' };

export type VaultResponse =
  | ({ readonly outcome: 'ok' } & OkResponse)
  | { readonly outcome: 'wrong-password'; readonly op: Operation; readonly guessesRemaining: number }
  | { readonly outcome: 'locked'; readonly op: Operation }
  | { readonly outcome: 'not-registered'; readonly op: Operation }
  | { readonly outcome: 'rate-limited'; readonly op: Operation; readonly retryAfterSeconds: number }
  | { readonly outcome: 'stale'; readonly op: Operation }
  | { readonly outcome: 'superseded'; readonly op: Operation }
  | { readonly outcome: 'proof-required'; readonly op: Operation }
  | { readonly outcome: 'already-registered'; readonly op: Operation }
  | { readonly outcome: 'invalid'; readonly op: Operation; readonly reason: InvalidReason };

function fixed(r: ByteReader, n: number, field: string): Uint8Array {
  return r.bytes(n, field);
}

function checkLength(b: Uint8Array, n: number, field: string): void {
  if (!(b instanceof Uint8Array)) throw new TypeError(`${field}: expected Uint8Array`);
  if (b.length !== n) throw new RangeError(`${field}: expected ${n} bytes, got ${b.length}`);
}

const ZERO_NONCE = new Uint8Array(SIZES.nonce);

/** Encodes the (unpadded) request body. @throws RangeError on wrong field sizes. */
export function encodeRequestBody(req: VaultRequest): Uint8Array {
  const w = new ByteWriter();
  switch (req.op) {
    case 'status':
      encodeProof(w, req.proof);
      break;
    case 'delete':
      w.u64(req.timestampMs);
      encodeProof(w, req.proof);
      break;
    case 'register-start':
      if (req.grant) checkLength(req.grant, SIZES.nonce, 'grant');
      checkLength(req.registrationRequest, SIZES.registrationRequest, 'registrationRequest');
      w.u8(req.grant ? 1 : 0).bytes(req.grant ?? ZERO_NONCE).bytes(req.registrationRequest);
      break;
    case 'register-finish':
      checkLength(req.nonce, SIZES.nonce, 'nonce');
      checkLength(req.registrationRecord, SIZES.registrationRecord, 'registrationRecord');
      if (req.wrappedKey.length > SIZES.wrappedKeyMax) throw new RangeError(`wrappedKey: more than ${SIZES.wrappedKeyMax} bytes`);
      checkLength(req.ownerTokenHash, SIZES.ownerTokenHash, 'ownerTokenHash');
      w.bytes(req.nonce).bytes(req.registrationRecord);
      encodeKsf(w, req.ksf).u8(req.guessLimit).vec16(req.wrappedKey).bytes(req.ownerTokenHash);
      break;
    case 'login-start':
      checkLength(req.ke1, SIZES.ke1, 'ke1');
      w.u64(req.timestampMs).bytes(req.ke1);
      break;
    case 'login-finish':
      checkLength(req.nonce, SIZES.nonce, 'nonce');
      if (req.ke3) checkLength(req.ke3, SIZES.ke3, 'ke3');
      w.bytes(req.nonce).u8(req.ke3 ? 1 : 0).bytes(req.ke3 ?? new Uint8Array(SIZES.ke3));
      break;
  }
  return w.finish();
}

/** @throws DecodeError */
export function decodeRequestBody(op: Operation, body: Uint8Array): VaultRequest {
  const r = new ByteReader(body);
  let req: VaultRequest;
  switch (op) {
    case 'status':
      req = { op, proof: decodeProof(r) };
      break;
    case 'delete': {
      const timestampMs = r.u64('timestampMs');
      req = { op, timestampMs, proof: decodeProof(r) };
      break;
    }
    case 'register-start': {
      const hasGrant = flag(r, 'hasGrant');
      const grant = fixed(r, SIZES.nonce, 'grant');
      if (!hasGrant && grant.some((b) => b !== 0)) throw new DecodeError('grant: must be zero when absent', 'bad-field');
      req = { op, grant: hasGrant ? grant : null, registrationRequest: fixed(r, SIZES.registrationRequest, 'registrationRequest') };
      break;
    }
    case 'register-finish':
      req = {
        op,
        nonce: fixed(r, SIZES.nonce, 'nonce'),
        registrationRecord: fixed(r, SIZES.registrationRecord, 'registrationRecord'),
        ksf: decodeKsf(r),
        guessLimit: r.u8('guessLimit'),
        wrappedKey: r.vec16('wrappedKey', SIZES.wrappedKeyMax),
        ownerTokenHash: fixed(r, SIZES.ownerTokenHash, 'ownerTokenHash'),
      };
      break;
    case 'login-start':
      req = { op, timestampMs: r.u64('timestampMs'), ke1: fixed(r, SIZES.ke1, 'ke1') };
      break;
    case 'login-finish': {
      const nonce = fixed(r, SIZES.nonce, 'nonce');
      const hasProof = flag(r, 'hasProof');
      const ke3 = fixed(r, SIZES.ke3, 'ke3');
      if (!hasProof && ke3.some((b) => b !== 0)) throw new DecodeError('ke3: must be zero when abandoning', 'bad-field');
      req = { op, nonce, ke3: hasProof ? ke3 : null };
      break;
    }
  }
  r.end('request body');
  return req;
}

function encodeProof(w: ByteWriter, proof: OwnerProof | null): void {
  if (!proof) w.u8(0);
  else if (proof.kind === 'grant') {
    checkLength(proof.grant, SIZES.nonce, 'proof.grant');
    w.u8(OWNER_PROOF_KINDS.grant).bytes(proof.grant);
  } else {
    checkLength(proof.token, SIZES.ownerToken, 'proof.token');
    w.u8(OWNER_PROOF_KINDS.token).bytes(proof.token);
  }
}

function decodeProof(r: ByteReader): OwnerProof | null {
  const kind = r.u8('proof.kind');
  if (kind === 0) return null;
  if (kind === OWNER_PROOF_KINDS.grant) return { kind: 'grant', grant: fixed(r, SIZES.nonce, 'proof.grant') };
  if (kind === OWNER_PROOF_KINDS.token) return { kind: 'token', token: fixed(r, SIZES.ownerToken, 'proof.token') };
  throw new DecodeError(`proof.kind: unknown ${kind}`, 'bad-field');
}

function flag(r: ByteReader, field: string): boolean {
  const v = r.u8(field);
  if (v > 1) throw new DecodeError(`${field}: must be 0 or 1`, 'bad-field');
  return v === 1;
}

/** Response: version, echoed operation, outcome, then the outcome's fields. */
export function encodeResponseBody(res: VaultResponse): Uint8Array {
  return writeResponseBody(new ByteWriter(), res).finish();
}

/**
 * `pad(encodeResponseBody(res))` written into one array: the body goes straight after the
 * two length bytes of a BODY_SIZE writer, which is returned without a copy (before: a
 * 256-byte writer, its `finish()` copy and `pad`'s array per response). The same bytes.
 * @throws RangeError as `pad` and `encodeResponseBody` do
 */
export function encodePaddedResponseBody(res: VaultResponse): Uint8Array {
  return writePadded(BODY_SIZE, 'body', (w) => writeResponseBody(w, res));
}

function writeResponseBody(w: ByteWriter, res: VaultResponse): ByteWriter {
  w.u8(PROTOCOL_VERSION).u8(operationCode(res.op)).u8(OUTCOMES[res.outcome]);
  switch (res.outcome) {
    case 'ok':
      encodeOk(w, res);
      break;
    case 'wrong-password':
      w.u8(res.guessesRemaining);
      break;
    case 'rate-limited':
      w.u16(res.retryAfterSeconds);
      break;
    case 'invalid':
      w.u8(INVALID_REASONS[res.reason]);
      break;
    case 'locked':
    case 'not-registered':
    case 'stale':
    case 'superseded':
    case 'proof-required':
    case 'already-registered':
      break;
  }
  return w;
}

function encodeOk(w: ByteWriter, res: OkResponse): void {
  switch (res.op) {
    case 'status':
      w.u8(res.guessesRemaining === null ? 0 : 1).u8(res.guessesRemaining ?? 0).u8(res.guessLimit);
      encodeKsf(w, res.ksf);
      break;
    case 'register-start':
      checkLength(res.nonce, SIZES.nonce, 'nonce');
      checkLength(res.registrationResponse, SIZES.registrationResponse, 'registrationResponse');
      w.bytes(res.nonce).bytes(res.registrationResponse).u8(res.guessLimit);
      break;
    case 'login-start':
      checkLength(res.nonce, SIZES.nonce, 'nonce');
      checkLength(res.ke2, SIZES.ke2, 'ke2');
      w.bytes(res.nonce).bytes(res.ke2);
      encodeKsf(w, res.ksf);
      break;
    case 'login-finish':
      checkLength(res.grant, SIZES.nonce, 'grant');
      if (res.releasedKey.length > SIZES.releasedKeyMax) throw new RangeError('releasedKey: too long');
      w.bytes(res.grant).vec16(res.releasedKey);
      break;
    case 'register-finish':
    case 'delete':
      break;
  }
}

/** @throws DecodeError */
export function decodeResponseBody(body: Uint8Array): VaultResponse {
  const r = new ByteReader(body);
  const version = r.u8('version');
  if (version !== PROTOCOL_VERSION) throw new DecodeError(`response version ${version} unsupported`, 'bad-version');
  const op = operationFromCode(r.u8('operation'));
  const code = r.u8('outcome');
  let res: VaultResponse;
  switch (code) {
    case OUTCOMES.ok:
      res = { outcome: 'ok', ...decodeOk(op, r) };
      break;
    case OUTCOMES['wrong-password']:
      res = { outcome: 'wrong-password', op, guessesRemaining: r.u8('guessesRemaining') };
      break;
    case OUTCOMES.locked:
      res = { outcome: 'locked', op };
      break;
    case OUTCOMES['not-registered']:
      res = { outcome: 'not-registered', op };
      break;
    case OUTCOMES['rate-limited']:
      res = { outcome: 'rate-limited', op, retryAfterSeconds: r.u16('retryAfterSeconds') };
      break;
    case OUTCOMES.stale:
      res = { outcome: 'stale', op };
      break;
    case OUTCOMES.superseded:
      res = { outcome: 'superseded', op };
      break;
    case OUTCOMES['proof-required']:
      res = { outcome: 'proof-required', op };
      break;
    case OUTCOMES['already-registered']:
      res = { outcome: 'already-registered', op };
      break;
    case OUTCOMES.invalid: {
      const reasonCode = r.u8('reason');
      const reason = (Object.keys(INVALID_REASONS) as InvalidReason[]).find((k) => INVALID_REASONS[k] === reasonCode);
      if (!reason) throw new DecodeError(`reason: unknown ${reasonCode}`, 'bad-field');
      res = { outcome: 'invalid', op, reason };
      break;
    }
    default:
      throw new DecodeError(`outcome: unknown code ${code}`, 'unknown-outcome');
  }
  r.end('response body');
  return res;
}

function decodeOk(op: Operation, r: ByteReader): OkResponse {
  switch (op) {
    case 'status': {
      const disclosed = flag(r, 'disclosed');
      const remaining = r.u8('guessesRemaining');
      if (!disclosed && remaining !== 0) throw new DecodeError('guessesRemaining: must be zero when not disclosed', 'bad-field');
      return { op, guessesRemaining: disclosed ? remaining : null, guessLimit: r.u8('guessLimit'), ksf: decodeKsf(r) };
    }
    case 'register-start':
      return { op, nonce: fixed(r, SIZES.nonce, 'nonce'), registrationResponse: fixed(r, SIZES.registrationResponse, 'registrationResponse'), guessLimit: r.u8('guessLimit') };
    case 'login-start':
      return { op, nonce: fixed(r, SIZES.nonce, 'nonce'), ke2: fixed(r, SIZES.ke2, 'ke2'), ksf: decodeKsf(r) };
    case 'login-finish':
      return { op, grant: fixed(r, SIZES.nonce, 'grant'), releasedKey: r.vec16('releasedKey', SIZES.releasedKeyMax) };
    case 'register-finish':
    case 'delete':
      return { op };
  }
}

/** Pads a body to BODY_SIZE: u16 length, body, zeros (spec §4.2). */
export function pad(body: Uint8Array): Uint8Array {
  if (body.length > BODY_SIZE - 2) throw new RangeError(`body: ${body.length} bytes exceeds ${BODY_SIZE - 2}`);
  const out = new Uint8Array(BODY_SIZE);
  out[0] = body.length >> 8;
  out[1] = body.length & 0xff;
  out.set(body, 2);
  return out;
}

/** @throws DecodeError unless the padding is canonical (all zeros, exact size). */
export function unpad(padded: Uint8Array): Uint8Array {
  if (padded.length !== BODY_SIZE) throw new DecodeError(`padded body: expected ${BODY_SIZE} bytes`, 'bad-length');
  const len = (padded[0]! << 8) | padded[1]!;
  if (len > BODY_SIZE - 2) throw new DecodeError('padded body: length field too large', 'bad-padding');
  for (let i = 2 + len; i < BODY_SIZE; i++) if (padded[i] !== 0) throw new DecodeError('padded body: non-zero padding', 'bad-padding');
  return padded.slice(2, 2 + len);
}
