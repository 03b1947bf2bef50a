/**
 * HPKE base mode (RFC 9180) for DHKEM(P-256, HKDF-SHA256), HKDF-SHA256 and AES-GCM,
 * single-shot (one message per context, sequence number 0) plus the secret exporter.
 *
 * Written out rather than taken whole from @hpke/core because the vault's side must
 * run the KEM's Diffie-Hellman *inside the HSM* (`Platform.ecdh`): the recipient here
 * takes a `dh(enc)` function instead of a private key. Checked against the RFC 9180
 * Appendix A.3 vectors and against @hpke/core in `test/rfc9180-hpke.test.ts`.
 */
import { concat, equalBytes, i2osp, utf8 } from './bytes.js';
import { DecryptionError, InvalidPeerKeyError } from './errors.js';
import { aesGcmOpen, aesGcmOpenNow, aesGcmSeal, generateEphemeral, hkdfExpand, hkdfExtract, hmacSha256IntoSync, type EphemeralKeyPair, type HmacInto } from './primitives.js';

export const KEM_P256_HKDF_SHA256 = 0x0010;
export const KDF_HKDF_SHA256 = 0x0001;
export const AEAD_AES_128_GCM = 0x0001;
export const AEAD_AES_256_GCM = 0x0002;

/** Serialized P-256 public key (SEC1 uncompressed): RFC 9180 §7.1.1 Npk = Nenc = 65. */
export const P256_PUBLIC_KEY_LENGTH = 65;
const N_SECRET = 32;
const N_H = 32;
const N_N = 12;
const HPKE_V1 = utf8('HPKE-v1');

export type AeadId = typeof AEAD_AES_128_GCM | typeof AEAD_AES_256_GCM;

function keyLength(aead: AeadId): number {
  return aead === AEAD_AES_256_GCM ? 32 : 16;
}

const KEM_SUITE_ID = concat(utf8('KEM'), i2osp(KEM_P256_HKDF_SHA256, 2));
const SUITE_IDS = new Map<AeadId, Uint8Array>();
function hpkeSuiteId(aead: AeadId): Uint8Array {
  let id = SUITE_IDS.get(aead);
  if (!id) SUITE_IDS.set(aead, (id = concat(utf8('HPKE'), i2osp(KEM_P256_HKDF_SHA256, 2), i2osp(KDF_HKDF_SHA256, 2), i2osp(aead, 2))));
  return id;
}

/** psk_id_hash of mode_base: LabeledExtract("", "psk_id_hash", "") — the same for every message of a suite. */
const PSK_ID_HASHES = new Map<AeadId, Promise<Uint8Array>>();
/** The same, computed with a synchronous HMAC (a public value: it hashes only labels). */
const PSK_ID_HASHES_SYNC = new Map<AeadId, Uint8Array>();
function emptyPskIdHash(aead: AeadId): Promise<Uint8Array> {
  let h = PSK_ID_HASHES.get(aead);
  if (!h) {
    h = labeledExtract(hpkeSuiteId(aead), new Uint8Array(0), 'psk_id_hash', new Uint8Array(0));
    PSK_ID_HASHES.set(aead, h);
    h.catch(() => PSK_ID_HASHES.delete(aead));
  }
  return h;
}

/**
 * The constant front of a labeled input, `[I2OSP(L, 2) ||] "HPKE-v1" || suite_id || label`,
 * encoded once per (suite, label, length): every message uses the same dozen.
 */
const prefixes = new WeakMap<Uint8Array, Map<string, Uint8Array>>();
function labelPrefix(suiteId: Uint8Array, label: string, length: number | null): Uint8Array {
  let bySuite = prefixes.get(suiteId);
  if (!bySuite) prefixes.set(suiteId, (bySuite = new Map()));
  const k = length === null ? label : `${label}/${length}`;
  let p = bySuite.get(k);
  if (!p) {
    p = length === null ? concat(HPKE_V1, suiteId, utf8(label)) : concat(i2osp(length, 2), HPKE_V1, suiteId, utf8(label));
    bySuite.set(k, p);
  }
  return p;
}

/** RFC 9180 §4: LabeledExtract. */
function labeledExtract(suiteId: Uint8Array, salt: Uint8Array, label: string, ikm: Uint8Array): Promise<Uint8Array> {
  return hkdfExtract(salt, concat(labelPrefix(suiteId, label, null), ikm));
}

/** RFC 9180 §4: LabeledExpand. */
function labeledExpand(suiteId: Uint8Array, prk: Uint8Array, label: string, info: Uint8Array, length: number): Promise<Uint8Array> {
  return hkdfExpand(prk, concat(labelPrefix(suiteId, label, length), info), length);
}

/*
 * The key schedule with a synchronous HMAC (a node:crypto provider): one message's
 * schedule is a dozen HMACs, and through the async path each costs a few promises and
 * microtasks more than the HMAC itself (issue 13). Each HMAC takes its input in parts
 * (label prefix, input, counter byte: no `concat`) and writes into an array: the
 * schedule's intermediate secrets (eae_prk, shared_secret, secret, a block cut to a
 * shorter length) live in the scratch arrays below, used only inside one synchronous call
 * and zeroed before it returns, so a message allocates only the context's key, nonce and
 * exporter secret. Lengths are at most one block (every length HPKE asks for here:
 * Nsecret, Nk, Nn, Nh, the 32-byte export); outputs are the async path's (the vectors and
 * test/rfc9180-hpke.test.ts run both).
 */
const EMPTY = new Uint8Array(0);
const ONE = new Uint8Array([1]);
const EAE_PRK = new Uint8Array(N_SECRET);
const SHARED_SECRET = new Uint8Array(N_SECRET);
const SECRET = new Uint8Array(N_H);
const BLOCK = new Uint8Array(N_H);
/** mode_base ‖ psk_id_hash ‖ info_hash: public values. */
const SCHEDULE_CONTEXT = new Uint8Array(1 + 2 * N_H);

/** LabeledExpand (one block, length ≤ Nh) written to `out[at..at+length]`. */
function labeledExpandInto(h: HmacInto, suiteId: Uint8Array, prk: Uint8Array, label: string, info: Uint8Array, length: number, out: Uint8Array, at: number): void {
  const prefix = labelPrefix(suiteId, label, length);
  if (length === N_H) return h(prk, out, at, prefix, info, ONE);
  if (length > N_H) throw new RangeError(`labeledExpandInto: length ${length} exceeds one block`);
  try {
    h(prk, BLOCK, 0, prefix, info, ONE);
    for (let i = 0; i < length; i++) out[at + i] = BLOCK[i]!;
  } finally {
    BLOCK.fill(0);
  }
}

/** ExtractAndExpand into SHARED_SECRET (the caller zeroes it); kem_context = enc ‖ pkRm. */
function extractAndExpandSync(h: HmacInto, dh: Uint8Array, enc: Uint8Array, recipientPublicKey: Uint8Array): void {
  try {
    h(EMPTY, EAE_PRK, 0, labelPrefix(KEM_SUITE_ID, 'eae_prk', null), dh);
    h(EAE_PRK, SHARED_SECRET, 0, labelPrefix(KEM_SUITE_ID, 'shared_secret', N_SECRET), enc, recipientPublicKey, ONE);
  } finally {
    EAE_PRK.fill(0);
  }
}

/** RFC 9180 §5.1 KeySchedule for mode_base with a synchronous HMAC. */
function keyScheduleSync(h: HmacInto, aead: AeadId, sharedSecret: Uint8Array, info: Uint8Array): HpkeContext {
  const suiteId = hpkeSuiteId(aead);
  let pskIdHash = PSK_ID_HASHES_SYNC.get(aead);
  if (!pskIdHash) {
    pskIdHash = new Uint8Array(N_H);
    h(EMPTY, pskIdHash, 0, labelPrefix(suiteId, 'psk_id_hash', null), EMPTY);
    PSK_ID_HASHES_SYNC.set(aead, pskIdHash);
  }
  const context = SCHEDULE_CONTEXT;
  context[0] = 0x00;
  context.set(pskIdHash, 1);
  h(EMPTY, context, 1 + N_H, labelPrefix(suiteId, 'info_hash', null), info);
  try {
    h(sharedSecret, SECRET, 0, labelPrefix(suiteId, 'secret', null), EMPTY);
    const key = new Uint8Array(keyLength(aead));
    labeledExpandInto(h, suiteId, SECRET, 'key', context, key.length, key, 0);
    const baseNonce = new Uint8Array(N_N);
    labeledExpandInto(h, suiteId, SECRET, 'base_nonce', context, N_N, baseNonce, 0);
    const exporterSecret = new Uint8Array(N_H);
    labeledExpandInto(h, suiteId, SECRET, 'exp', context, N_H, exporterSecret, 0);
    return new HpkeContext(aead, key, baseNonce, exporterSecret);
  } finally {
    SECRET.fill(0);
  }
}

/** The DH output to a context with a synchronous HMAC; the shared secret is zeroed after. */
function contextFromDhSync(h: HmacInto, aead: AeadId, dh: Uint8Array, enc: Uint8Array, recipientPublicKey: Uint8Array, info: Uint8Array): HpkeContext {
  try {
    extractAndExpandSync(h, dh, enc, recipientPublicKey);
    return keyScheduleSync(h, aead, SHARED_SECRET, info);
  } finally {
    SHARED_SECRET.fill(0);
  }
}

/** RFC 9180 §4.1: ExtractAndExpand, the DHKEM shared secret from the DH output (async provider). */
async function extractAndExpand(dh: Uint8Array, kemContext: Uint8Array): Promise<Uint8Array> {
  const eaePrk = await labeledExtract(KEM_SUITE_ID, new Uint8Array(0), 'eae_prk', dh);
  return labeledExpand(KEM_SUITE_ID, eaePrk, 'shared_secret', kemContext, N_SECRET);
}

/** One HPKE context, usable for exactly one seal or open (sequence 0) and for exports. */
export class HpkeContext {
  #used = false;
  constructor(
    private readonly aead: AeadId,
    private readonly key: Uint8Array,
    private readonly baseNonce: Uint8Array,
    private readonly exporterSecret: Uint8Array,
  ) {}

  #consume(): void {
    // Sequence numbers are never advanced here: a second message would reuse the nonce.
    if (this.#used) throw new Error('HpkeContext: already used for a message');
    this.#used = true;
  }

  /** RFC 9180 §5.2 ContextS.Seal with seq = 0 (nonce = base_nonce). */
  seal(aad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    this.#consume();
    return aesGcmSeal(this.key, this.baseNonce, aad, plaintext);
  }

  /** RFC 9180 §5.2 ContextR.Open with seq = 0. @throws DecryptionError */
  open(aad: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
    this.#consume();
    return aesGcmOpen(this.key, this.baseNonce, aad, ciphertext);
  }

  /**
   * `open` returning the plaintext itself when the provider is synchronous (no promise:
   * the vault opens every request with it), else the promise. @throws DecryptionError
   */
  openNow(aad: Uint8Array, ciphertext: Uint8Array): Uint8Array | Promise<Uint8Array> {
    this.#consume();
    return aesGcmOpenNow(this.key, this.baseNonce, aad, ciphertext);
  }

  /** RFC 9180 §5.3 secret export. */
  export(exporterContext: Uint8Array, length: number): Promise<Uint8Array> {
    const h = hmacSha256IntoSync();
    if (h && length <= N_H) {
      const out = new Uint8Array(length);
      this.exportInto(h, exporterContext, length, out, 0);
      return Promise.resolve(out);
    }
    return labeledExpand(hpkeSuiteId(this.aead), this.exporterSecret, 'sec', exporterContext, length);
  }

  /** `export` with a synchronous HMAC into `out[at..at+length]`, for at most one block (32 bytes). */
  exportInto(h: HmacInto, exporterContext: Uint8Array, length: number, out: Uint8Array, at: number): void {
    labeledExpandInto(h, hpkeSuiteId(this.aead), this.exporterSecret, 'sec', exporterContext, length, out, at);
  }
}

/** RFC 9180 §5.1 KeySchedule for mode_base (psk and psk_id empty). */
async function keyScheduleBase(aead: AeadId, sharedSecret: Uint8Array, info: Uint8Array): Promise<HpkeContext> {
  const suiteId = hpkeSuiteId(aead);
  const empty = EMPTY;
  const pskIdHash = await emptyPskIdHash(aead);
  const infoHash = await labeledExtract(suiteId, empty, 'info_hash', info);
  const context = concat(new Uint8Array([0x00]), pskIdHash, infoHash);
  const secret = await labeledExtract(suiteId, sharedSecret, 'secret', empty);
  const key = await labeledExpand(suiteId, secret, 'key', context, keyLength(aead));
  const baseNonce = await labeledExpand(suiteId, secret, 'base_nonce', context, N_N);
  const exporterSecret = await labeledExpand(suiteId, secret, 'exp', context, N_H);
  return new HpkeContext(aead, key, baseNonce, exporterSecret);
}

/** Checks the shape of a recipient public key (the curve check happens in the DH). */
export function checkRecipientKey(publicKey: Uint8Array): void {
  if (publicKey.length !== P256_PUBLIC_KEY_LENGTH || publicKey[0] !== 0x04) {
    throw new RangeError('recipient public key: must be a 65-byte uncompressed P-256 point');
  }
}

export type { EphemeralKeyPair };

/** RFC 9180 §5.1.1 SetupBaseS. Returns `enc` and the sender context. */
export async function setupBaseSender(
  aead: AeadId,
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  ephemeral?: EphemeralKeyPair,
): Promise<{ enc: Uint8Array; context: HpkeContext }> {
  checkRecipientKey(recipientPublicKey);
  const eph = ephemeral ?? (await generateEphemeral());
  // RFC 9180 §4.1 Encap: dh = DH(skE, pkR); kem_context = enc || pkRm.
  const dh = await eph.dh(recipientPublicKey);
  const h = hmacSha256IntoSync();
  if (h) return { enc: eph.publicKey, context: contextFromDhSync(h, aead, dh, eph.publicKey, recipientPublicKey, info) };
  const sharedSecret = await extractAndExpand(dh, concat(eph.publicKey, recipientPublicKey));
  return { enc: eph.publicKey, context: await keyScheduleBase(aead, sharedSecret, info) };
}

/**
 * RFC 9180 §5.1.1 SetupBaseR with the DH done elsewhere (in the HSM).
 * `dh(enc)` must return DH(skR, pkE) as the 32-byte x-coordinate, and must reject
 * points not on the curve (RFC 9180 §7.1.4) by throwing `InvalidPeerKeyError`.
 * @throws DecryptionError if `dh` rejects the encapsulated key with InvalidPeerKeyError;
 *   any other error from `dh` (an HSM failure) propagates unchanged.
 */
export async function setupBaseRecipient(
  aead: AeadId,
  enc: Uint8Array,
  recipientPublicKey: Uint8Array,
  dh: (enc: Uint8Array) => Promise<Uint8Array>,
  info: Uint8Array,
): Promise<HpkeContext> {
  if (enc.length !== P256_PUBLIC_KEY_LENGTH || enc[0] !== 0x04) throw new DecryptionError();
  let dhOutput: Uint8Array;
  try {
    dhOutput = await dh(enc);
  } catch (err) {
    if (err instanceof InvalidPeerKeyError) throw new DecryptionError();
    throw err;
  }
  // An all-zero DH output would mean a degenerate point; the DH function should have
  // refused it already, this is defence in depth (RFC 9180 §7.1.4).
  if (dhOutput.length !== 32 || equalBytes(dhOutput, new Uint8Array(32))) throw new DecryptionError();
  const h = hmacSha256IntoSync();
  if (h) return contextFromDhSync(h, aead, dhOutput, enc, recipientPublicKey, info);
  const sharedSecret = await extractAndExpand(dhOutput, concat(enc, recipientPublicKey));
  return keyScheduleBase(aead, sharedSecret, info);
}
