/**
 * The HPKE envelope around every vault request and response (spec §3), shaped like
 * Oblivious HTTP (RFC 9458): the client seals its request to the fleet key with HPKE
 * base mode, and the vault seals its response under a key exported from the same
 * context, so whatever carries the bytes (the front end) reads neither.
 *
 * Request on the wire (fixed 603 bytes):
 *   version(1) || op(1) || keyId(8) || enc(65) || Seal(padded body, 512+16)
 * Response on the wire (fixed 560 bytes):
 *   response_nonce(32) || AEAD(padded body, 512+16)
 */
import { ByteReader, ByteWriter, concat, equalBytes, utf8 } from './bytes.js';
import { DecodeError, DecryptionError } from './errors.js';
import type { FleetKey } from './fleet-key.js';
import { FLEET_KEY_ID_LENGTH } from './fleet-key.js';
import { AEAD_AES_256_GCM, P256_PUBLIC_KEY_LENGTH, setupBaseRecipient, setupBaseSender, type EphemeralKeyPair, type HpkeContext } from './hpke.js';
import { LABELS } from './labels.js';
import { BODY_SIZE, operationCode, operationFromCode, PROTOCOL_VERSION, type Operation } from './messages.js';
import { aesGcmOpen, aesGcmSealNow, generateEphemeral, hkdfExpand, hkdfExtract, hmacSha256IntoSync, webRandom, type HmacInto, type RandomSource } from './primitives.js';

const TAG = 16;
export const REQUEST_HEADER_LENGTH = 1 + 1 + FLEET_KEY_ID_LENGTH + P256_PUBLIC_KEY_LENGTH;
export const REQUEST_LENGTH = REQUEST_HEADER_LENGTH + BODY_SIZE + TAG;
/** RFC 9458 §4.4: max(Nn, Nk) = 32 for AES-256-GCM. */
export const RESPONSE_NONCE_LENGTH = 32;
export const RESPONSE_LENGTH = RESPONSE_NONCE_LENGTH + BODY_SIZE + TAG;
/** Account IDs are printable ASCII, 1..128 bytes (spec §3.2). */
export const ACCOUNT_ID_PATTERN = /^[\x21-\x7e]{1,128}$/;

export function checkAccountId(account: string): void {
  if (typeof account !== 'string' || !ACCOUNT_ID_PATTERN.test(account)) {
    throw new RangeError('account: must be 1..128 printable ASCII characters');
  }
}

const REQUEST_INFO_LABEL = utf8(LABELS.requestInfo);
/**
 * HPKE info: binds the account, the operation, the protocol version and the fleet key
 * into the key schedule (RFC 9180 §5.1), so a ciphertext spliced onto another account
 * or operation does not open.
 */
export function requestInfo(version: number, op: Operation, keyId: Uint8Array, account: string): Uint8Array {
  const a = utf8(account);
  return new ByteWriter(REQUEST_INFO_LABEL.length + 3 + keyId.length + 2 + a.length).bytes(REQUEST_INFO_LABEL).u8(0).u8(version).u8(operationCode(op)).bytes(keyId).vec16(a).finish();
}

export interface RequestHeader {
  readonly version: number;
  readonly op: Operation;
  readonly keyId: Uint8Array;
  readonly enc: Uint8Array;
  readonly ciphertext: Uint8Array;
}

/** Splits a request without decrypting it. @throws DecodeError */
export function parseRequest(bytes: Uint8Array): RequestHeader {
  if (bytes.length !== REQUEST_LENGTH) throw new DecodeError(`request: expected ${REQUEST_LENGTH} bytes, got ${bytes.length}`, 'bad-length');
  const r = new ByteReader(bytes);
  const version = r.u8('version');
  if (version !== PROTOCOL_VERSION) throw new DecodeError(`request: version ${version} unsupported`, 'bad-version');
  const op = operationFromCode(r.u8('operation'));
  const keyId = r.bytes(FLEET_KEY_ID_LENGTH, 'keyId');
  const enc = r.bytes(P256_PUBLIC_KEY_LENGTH, 'enc');
  return { version, op, keyId, enc, ciphertext: r.rest() };
}

const RESPONSE_EXPORT = utf8(LABELS.responseExport);
const RESPONSE_KEY = utf8(LABELS.responseKey);
const RESPONSE_NONCE = utf8(LABELS.responseNonce);
const EMPTY = new Uint8Array(0);

const ONE = new Uint8Array([1]);
/*
 * Scratch for the synchronous response derivation: the exported secret, the PRK and a
 * block cut to the nonce's length (zeroed before `responseKeysSync` returns), and the
 * salt enc ‖ response_nonce (public).
 */
const RESPONSE_SECRET = new Uint8Array(32);
const RESPONSE_PRK = new Uint8Array(32);
const RESPONSE_BLOCK = new Uint8Array(32);
const RESPONSE_SALT = new Uint8Array(P256_PUBLIC_KEY_LENGTH + RESPONSE_NONCE_LENGTH);

/**
 * RFC 9458 §4.4 with a synchronous HMAC: the same derivation as `responseKeys` (one-block
 * HKDF-Expand: T(1) = HMAC(PRK, info ‖ 0x01)) without a promise or a `concat` per HMAC.
 */
function responseKeysSync(h: HmacInto, context: HpkeContext, enc: Uint8Array, responseNonce: Uint8Array): { key: Uint8Array; nonce: Uint8Array } {
  try {
    context.exportInto(h, RESPONSE_EXPORT, 32, RESPONSE_SECRET, 0);
    let salt: Uint8Array = RESPONSE_SALT;
    if (enc.length === P256_PUBLIC_KEY_LENGTH && responseNonce.length === RESPONSE_NONCE_LENGTH) {
      salt.set(enc, 0);
      salt.set(responseNonce, P256_PUBLIC_KEY_LENGTH);
    } else salt = concat(enc, responseNonce);
    h(salt, RESPONSE_PRK, 0, RESPONSE_SECRET);
    const key = new Uint8Array(32);
    h(RESPONSE_PRK, key, 0, RESPONSE_KEY, ONE);
    h(RESPONSE_PRK, RESPONSE_BLOCK, 0, RESPONSE_NONCE, ONE);
    return { key, nonce: RESPONSE_BLOCK.slice(0, 12) };
  } finally {
    RESPONSE_SECRET.fill(0);
    RESPONSE_PRK.fill(0);
    RESPONSE_BLOCK.fill(0);
  }
}

/** RFC 9458 §4.4: derive the response AEAD key and nonce from the request context. */
async function responseKeys(context: HpkeContext, enc: Uint8Array, responseNonce: Uint8Array): Promise<{ key: Uint8Array; nonce: Uint8Array }> {
  const h = hmacSha256IntoSync();
  if (h) return responseKeysSync(h, context, enc, responseNonce);
  const secret = await context.export(RESPONSE_EXPORT, 32);
  const prk = await hkdfExtract(concat(enc, responseNonce), secret);
  return {
    key: await hkdfExpand(prk, RESPONSE_KEY, 32),
    nonce: await hkdfExpand(prk, RESPONSE_NONCE, 12),
  };
}

/** What the client keeps to read the answer to one request. */
export interface SealedRequest {
  readonly bytes: Uint8Array;
  /** @throws DecryptionError, DecodeError */
  openResponse(response: Uint8Array): Promise<Uint8Array>;
}

export interface SealRequestOptions {
  /** Test vectors only: a fixed ephemeral key. */
  ephemeral?: EphemeralKeyPair;
}

/**
 * A fresh ephemeral key for the two requests of one recovery (spec §3.2: a login-finish
 * is sealed with its login-start's ephemeral, so the vault can reuse that request's DH
 * with the fleet key). The DH with a given peer is computed once. Nothing else may share it.
 */
export async function reusableEphemeral(): Promise<EphemeralKeyPair> {
  const eph = await generateEphemeral();
  let memo: { readonly peer: Uint8Array; readonly dh: Promise<Uint8Array> } | null = null;
  return {
    publicKey: eph.publicKey,
    dh(peer: Uint8Array): Promise<Uint8Array> {
      if (!memo || !equalBytes(memo.peer, peer)) memo = { peer: peer.slice(), dh: eph.dh(peer) };
      return memo.dh.then((d) => d.slice());
    },
  };
}

/** Client side: seal a padded body for `account` and `op` to the pinned fleet key. */
export async function sealRequest(fleetKey: FleetKey, account: string, op: Operation, paddedBody: Uint8Array, options: SealRequestOptions = {}): Promise<SealedRequest> {
  checkAccountId(account);
  if (paddedBody.length !== BODY_SIZE) throw new RangeError(`paddedBody: expected ${BODY_SIZE} bytes`);
  const info = requestInfo(PROTOCOL_VERSION, op, fleetKey.keyId, account);
  const { enc, context } = await setupBaseSender(AEAD_AES_256_GCM, fleetKey.publicKey, info, options.ephemeral);
  const ct = await context.seal(new Uint8Array(0), paddedBody);
  const header = new ByteWriter().u8(PROTOCOL_VERSION).u8(operationCode(op)).bytes(fleetKey.keyId).bytes(enc).finish();
  return {
    bytes: concat(header, ct),
    async openResponse(response: Uint8Array): Promise<Uint8Array> {
      if (response.length !== RESPONSE_LENGTH) throw new DecodeError(`response: expected ${RESPONSE_LENGTH} bytes, got ${response.length}`, 'bad-length');
      const responseNonce = response.subarray(0, RESPONSE_NONCE_LENGTH);
      const { key, nonce } = await responseKeys(context, enc, responseNonce);
      return aesGcmOpen(key, nonce, new Uint8Array(0), response.subarray(RESPONSE_NONCE_LENGTH));
    },
  };
}

/** What the vault keeps to answer one opened request. */
export interface OpenedRequest {
  readonly op: Operation;
  readonly enc: Uint8Array;
  readonly paddedBody: Uint8Array;
  /** Seals a padded response body; `responseNonce` is 32 fresh random bytes. */
  sealResponse(paddedBody: Uint8Array, responseNonce: Uint8Array): Promise<Uint8Array>;
}

/**
 * Vault side: open a parsed request for `account` with the fleet key whose DH runs in
 * the HSM. `dh` signals an invalid `enc` with InvalidPeerKeyError.
 * @throws DecryptionError for every failure to authenticate; whatever else `dh` throws
 *   (an HSM failure) propagates unchanged.
 */
export async function openRequest(
  header: RequestHeader,
  account: string,
  fleetPublicKey: Uint8Array,
  dh: (enc: Uint8Array) => Promise<Uint8Array>,
): Promise<OpenedRequest> {
  const info = requestInfo(header.version, header.op, header.keyId, account);
  const context = await setupBaseRecipient(AEAD_AES_256_GCM, header.enc, fleetPublicKey, dh, info);
  let paddedBody = context.openNow(EMPTY, header.ciphertext);
  if (paddedBody instanceof Promise) paddedBody = await paddedBody;
  if (paddedBody.length !== BODY_SIZE) throw new DecryptionError();
  return {
    op: header.op,
    enc: header.enc,
    paddedBody,
    async sealResponse(body: Uint8Array, responseNonce: Uint8Array): Promise<Uint8Array> {
      if (body.length !== BODY_SIZE) throw new RangeError(`response body: expected ${BODY_SIZE} bytes`);
      if (responseNonce.length !== RESPONSE_NONCE_LENGTH) throw new RangeError('responseNonce: expected 32 bytes');
      const h = hmacSha256IntoSync();
      const { key, nonce } = h ? responseKeysSync(h, context, header.enc, responseNonce) : await responseKeys(context, header.enc, responseNonce);
      let sealed = aesGcmSealNow(key, nonce, EMPTY, body);
      if (sealed instanceof Promise) sealed = await sealed;
      return concat(responseNonce, sealed);
    },
  };
}

export { webRandom, type RandomSource };
