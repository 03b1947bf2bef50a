/**
 * An account's record: the only state the vault keeps, sealed by the HSM at rest.
 *
 * Stored bytes: formatVersion(1) || Platform.seal(recordSeal key, AAD, plaintext), with
 *   AAD = "coffer/vault/v1/record" || 0x00 || formatVersion || u16 len || account
 * so a record altered, moved to another account, or sealed by another fleet's key does
 * not open (spec §7).
 *
 * Format 2 (this code writes it) adds the registration ID that keys the record's OPRF
 * (spec §5.1), the owner-token hash (§5.5) and the register-start rate window. Format 1
 * records still open: they read as registration ID `null` (the legacy credential
 * identifier, the bare account), no owner token, an empty window.
 */
import { ByteReader, ByteWriter, DecodeError, writePadded, decodeKsf, encodeKsf, isAscii, LABELS, SIZES, utf8, type KsfParams } from '@coffer/protocol';
import { KEY_LABELS } from './key-labels.js';
import type { Platform } from './platform.js';

export const RECORD_FORMAT_VERSION = 2;
const LEGACY_FORMAT_VERSION = 1;

export interface PendingLogin {
  readonly nonce: Uint8Array;
  readonly expiresAt: number;
  /** @serenity-kit/opaque's serialized server login state (RFC 9807 §6.4, server side). */
  readonly serverLoginState: Uint8Array;
}

export interface Expiring {
  readonly nonce: Uint8Array;
  readonly expiresAt: number;
}

/** A registration between its two round trips: its nonce, expiry and OPRF key's ID. */
export interface PendingRegistration extends Expiring {
  /** Random, made by register-start: the OPRF key is per registration (spec §5.1). */
  readonly registrationId: Uint8Array;
}

/** A digest of a login request already answered, remembered until it could no longer be fresh. */
export interface SeenLogin {
  readonly digest: Uint8Array;
  readonly expiresAt: number;
}

export interface ActiveRecord {
  readonly state: 'active';
  readonly guessLimit: number;
  /** Guesses counted since the last successful login (the GuessCounter). */
  readonly guessesUsed: number;
  readonly ksf: KsfParams;
  /** RFC 9807 §5.1.3 RegistrationRecord (client public key, masking key, envelope). */
  readonly registrationRecord: Uint8Array;
  /** The registration ID its OPRF key is derived from; `null` for a format-1 record (bare account). */
  readonly registrationId: Uint8Array | null;
  /** SHA-256 of the owner token derived from K; `null` for a format-1 record (grant only). */
  readonly ownerTokenHash: Uint8Array | null;
  /** When register-finish made it (vault clock; 0 for a format-1 record): older deletes don't apply. */
  readonly registeredAt: number;
  /** Vault-clock expiry times of recent register-starts (the per-account rate window). */
  readonly registerStarts: readonly number[];
  /** K wrapped by the client under its OPAQUE export key; opaque to the vault. */
  readonly wrappedKey: Uint8Array;
  readonly pendingLogin: PendingLogin | null;
  /** A change of password in progress (after a login granted it). */
  readonly pendingRegistration: PendingRegistration | null;
  /** Permission to replace this record, handed out by a successful login. */
  readonly changeGrant: Expiring | null;
  readonly seenLogins: readonly SeenLogin[];
}

export interface PendingRegistrationRecord {
  readonly state: 'pending-registration';
  /** `null` once it expired while the rate window still holds starts. */
  readonly registration: PendingRegistration | null;
  readonly registerStarts: readonly number[];
}

/** What is left after the guess limit: a tombstone, so the answer is "locked", not "unknown". */
export interface ErasedRecord {
  readonly state: 'erased';
  readonly erasedAt: number;
  readonly registerStarts: readonly number[];
}

export type AccountRecord = ActiveRecord | PendingRegistrationRecord | ErasedRecord;

const STATES = { 'pending-registration': 1, active: 2, erased: 3 } as const;
const MAX_SERVER_LOGIN_STATE = 256;
const MAX_SEEN_LOGINS = 64;
export const MAX_REGISTER_STARTS = 64;
/**
 * Format 2 pads every record's plaintext to this size (u16 length || record || zeros)
 * before sealing, so the store's reader learns nothing from sizes — e.g. whether a login
 * succeeded (which adds a grant) or failed. The largest record is 2826 bytes.
 */
export const RECORD_PADDED_SIZE = 3072;

function writeExpiring(w: ByteWriter, e: Expiring | null): void {
  if (!e) w.u8(0);
  else w.u8(1).bytes(e.nonce).u64(e.expiresAt);
}

function writePendingRegistration(w: ByteWriter, p: PendingRegistration | null): void {
  writeExpiring(w, p);
  if (p) w.bytes(p.registrationId);
}

function readPendingRegistration(r: ByteReader, field: string): PendingRegistration | null {
  const e = readExpiring(r, field);
  return e ? { ...e, registrationId: r.bytes(SIZES.registrationId, `${field}.registrationId`) } : null;
}

function writeStarts(w: ByteWriter, starts: readonly number[]): void {
  if (starts.length > MAX_REGISTER_STARTS) throw new RangeError('registerStarts: too many');
  w.u8(starts.length);
  for (const t of starts) w.u64(t);
}

function readStarts(r: ByteReader): number[] {
  const n = r.u8('registerStarts.count');
  if (n > MAX_REGISTER_STARTS) throw new DecodeError('registerStarts: too many', 'bad-field');
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(r.u64('registerStarts.expiresAt'));
  return out;
}

function readExpiring(r: ByteReader, field: string): Expiring | null {
  const present = r.u8(`${field}.present`);
  if (present === 0) return null;
  if (present !== 1) throw new DecodeError(`${field}.present: must be 0 or 1`, 'bad-field');
  return { nonce: r.bytes(SIZES.nonce, `${field}.nonce`), expiresAt: r.u64(`${field}.expiresAt`) };
}

export function encodeRecord(rec: AccountRecord): Uint8Array {
  return writeRecord(new ByteWriter(RECORD_PADDED_SIZE), rec).finish();
}

function writeRecord(w: ByteWriter, rec: AccountRecord): ByteWriter {
  w.u8(STATES[rec.state]);
  switch (rec.state) {
    case 'pending-registration':
      writePendingRegistration(w, rec.registration);
      writeStarts(w, rec.registerStarts);
      break;
    case 'erased':
      w.u64(rec.erasedAt);
      writeStarts(w, rec.registerStarts);
      break;
    case 'active':
      w.u8(rec.guessLimit).u8(rec.guessesUsed);
      encodeKsf(w, rec.ksf);
      w.bytes(rec.registrationRecord).vec16(rec.wrappedKey);
      // Format 2 never writes a legacy record back without its ID: a format-1 record keeps
      // working (registrationId null → zero-length) until its next registration.
      w.vec16(rec.registrationId ?? new Uint8Array(0)).vec16(rec.ownerTokenHash ?? new Uint8Array(0)).u64(rec.registeredAt);
      writeStarts(w, rec.registerStarts);
      if (!rec.pendingLogin) w.u8(0);
      else w.u8(1).bytes(rec.pendingLogin.nonce).u64(rec.pendingLogin.expiresAt).vec16(rec.pendingLogin.serverLoginState);
      writePendingRegistration(w, rec.pendingRegistration);
      writeExpiring(w, rec.changeGrant);
      w.u8(rec.seenLogins.length);
      for (const s of rec.seenLogins) w.bytes(s.digest).u64(s.expiresAt);
      break;
  }
  return w;
}

/** padRecord(encodeRecord(rec)), written in place: u16 length || record || zeros. */
export function encodePaddedRecord(rec: AccountRecord): Uint8Array {
  return writePadded(RECORD_PADDED_SIZE, 'record', (w) => writeRecord(w, rec));
}

/**
 * @param formatVersion 2 (current) or 1 (legacy, read only)
 * @throws DecodeError (only for a record that authenticated yet does not parse: a bug).
 */
export function decodeRecord(bytes: Uint8Array, formatVersion: number = RECORD_FORMAT_VERSION): AccountRecord {
  const legacy = formatVersion === LEGACY_FORMAT_VERSION;
  const r = new ByteReader(bytes);
  const state = r.u8('record.state');
  let rec: AccountRecord;
  if (state === STATES['pending-registration']) {
    if (legacy) {
      // A format-1 registration in progress has no registration ID: it cannot finish
      // under format 2 (the client starts again), so it reads as expired.
      if (!readExpiring(r, 'registration')) throw new DecodeError('registration: missing', 'bad-field');
      rec = { state: 'pending-registration', registration: null, registerStarts: [] };
    } else {
      const registration = readPendingRegistration(r, 'registration');
      rec = { state: 'pending-registration', registration, registerStarts: readStarts(r) };
    }
  } else if (state === STATES.erased) {
    rec = { state: 'erased', erasedAt: r.u64('erasedAt'), registerStarts: legacy ? [] : readStarts(r) };
  } else if (state === STATES.active) {
    const guessLimit = r.u8('guessLimit');
    const guessesUsed = r.u8('guessesUsed');
    const ksf = decodeKsf(r);
    const registrationRecord = r.bytes(SIZES.registrationRecord, 'registrationRecord');
    const wrappedKey = r.vec16('wrappedKey', SIZES.wrappedKeyMax);
    let registrationId: Uint8Array | null = null;
    let ownerTokenHash: Uint8Array | null = null;
    let registerStarts: number[] = [];
    let registeredAt = 0;
    if (!legacy) {
      const id = r.vec16('registrationId', SIZES.registrationId);
      const dth = r.vec16('ownerTokenHash', SIZES.ownerTokenHash);
      if (id.length !== 0 && id.length !== SIZES.registrationId) throw new DecodeError('registrationId: bad length', 'bad-field');
      if (dth.length !== 0 && dth.length !== SIZES.ownerTokenHash) throw new DecodeError('ownerTokenHash: bad length', 'bad-field');
      registrationId = id.length ? id : null;
      ownerTokenHash = dth.length ? dth : null;
      registeredAt = r.u64('registeredAt');
      registerStarts = readStarts(r);
    }
    const hasLogin = r.u8('pendingLogin.present');
    let pendingLogin: PendingLogin | null = null;
    if (hasLogin === 1) {
      pendingLogin = { nonce: r.bytes(SIZES.nonce, 'pendingLogin.nonce'), expiresAt: r.u64('pendingLogin.expiresAt'), serverLoginState: r.vec16('pendingLogin.state', MAX_SERVER_LOGIN_STATE) };
    } else if (hasLogin !== 0) throw new DecodeError('pendingLogin.present: must be 0 or 1', 'bad-field');
    // A format-1 password change in progress cannot finish (no registration ID): dropped.
    let pendingRegistration: PendingRegistration | null = null;
    if (legacy) readExpiring(r, 'pendingRegistration');
    else pendingRegistration = readPendingRegistration(r, 'pendingRegistration');
    const changeGrant = readExpiring(r, 'changeGrant');
    const n = r.u8('seenLogins.count');
    if (n > MAX_SEEN_LOGINS) throw new DecodeError('seenLogins: too many', 'bad-field');
    const seenLogins: SeenLogin[] = [];
    for (let i = 0; i < n; i++) seenLogins.push({ digest: r.bytes(16, 'seenLogins.digest'), expiresAt: r.u64('seenLogins.expiresAt') });
    if (guessLimit < 1 || guessesUsed > guessLimit) throw new DecodeError('guess counter out of range', 'bad-field');
    rec = { state: 'active', guessLimit, guessesUsed, ksf, registrationRecord, registrationId, ownerTokenHash, registeredAt, registerStarts, wrappedKey, pendingLogin, pendingRegistration, changeGrant, seenLogins };
  } else {
    throw new DecodeError(`record.state: unknown ${state}`, 'bad-field');
  }
  r.end('record');
  return rec;
}

/** The AAD's constant start, `"coffer/vault/v1/record" ‖ 0x00`, encoded once. */
const RECORD_AAD_PREFIX = new ByteWriter().bytes(utf8(LABELS.recordSeal)).u8(0).finish();

/**
 * `"coffer/vault/v1/record" ‖ 0x00 ‖ formatVersion ‖ u16 len ‖ account` (UTF-8). Three per
 * recovery (two seals, one unseal): an account ID is printable ASCII (one byte per
 * character), so it is written straight into one array after the prefix encoded once;
 * anything else goes through the UTF-8 encoder as before. The same bytes either way.
 */
export function recordAad(account: string, formatVersion: number): Uint8Array {
  const n = account.length;
  const ascii = n <= 0xffff && Number.isInteger(formatVersion) && formatVersion >= 0 && formatVersion <= 0xff && isAscii(account);
  if (!ascii) return new ByteWriter().bytes(RECORD_AAD_PREFIX).u8(formatVersion).vec16(utf8(account)).finish();
  const p = RECORD_AAD_PREFIX.length;
  const out = new Uint8Array(p + 3 + n);
  out.set(RECORD_AAD_PREFIX, 0);
  out[p] = formatVersion;
  out[p + 1] = n >> 8;
  out[p + 2] = n & 0xff;
  for (let i = 0; i < n; i++) out[p + 3 + i] = account.charCodeAt(i);
  return out;
}

/**
 * The record-sealing keys a fleet holds: `current` seals every new write; all of them
 * (newest first) open. A rotation adds a key without a format change: AES-GCM under any
 * other key fails authentication, so the first key that opens is the one that sealed.
 */
export interface RecordKeyring {
  readonly current: string;
  /** Every label that may have sealed a stored record, `current` included. */
  readonly all: readonly string[];
}

export const DEFAULT_RECORD_KEYRING: RecordKeyring = { current: KEY_LABELS.recordSeal, all: [KEY_LABELS.recordSeal] };

/** u16 length || body || zeros, RECORD_PADDED_SIZE bytes. */
export function padRecord(body: Uint8Array): Uint8Array {
  if (body.length > RECORD_PADDED_SIZE - 2) throw new RangeError(`record: ${body.length} bytes exceeds ${RECORD_PADDED_SIZE - 2}`);
  const out = new Uint8Array(RECORD_PADDED_SIZE);
  out[0] = body.length >> 8;
  out[1] = body.length & 0xff;
  out.set(body, 2);
  return out;
}

/** @throws DecodeError unless canonical */
export function unpadRecord(padded: Uint8Array): Uint8Array {
  if (padded.length !== RECORD_PADDED_SIZE) throw new DecodeError('record: not padded to the fixed size', 'bad-length');
  const len = (padded[0]! << 8) | padded[1]!;
  if (len > RECORD_PADDED_SIZE - 2) throw new DecodeError('record: length field too large', 'bad-padding');
  for (let i = 2 + len; i < padded.length; i++) if (padded[i] !== 0) throw new DecodeError('record: non-zero padding', 'bad-padding');
  return padded.subarray(2, 2 + len);
}

export async function sealRecord(platform: Platform, account: string, rec: AccountRecord, keys: RecordKeyring = DEFAULT_RECORD_KEYRING): Promise<Uint8Array> {
  const plaintext = encodePaddedRecord(rec);
  // One byte of headroom for the format byte: written in place, no 3 KB copy per seal
  // (two per recovery). A platform that ignores headroom gives nonce ‖ ciphertext ‖ tag
  // (28 bytes more than the plaintext), which is copied behind the byte as before.
  const sealed = await platform.seal(keys.current, recordAad(account, RECORD_FORMAT_VERSION), plaintext, 1);
  if (sealed.length === 1 + SEAL_OVERHEAD + plaintext.length) {
    sealed[0] = RECORD_FORMAT_VERSION;
    return sealed;
  }
  const out = new Uint8Array(1 + sealed.length);
  out[0] = RECORD_FORMAT_VERSION;
  out.set(sealed, 1);
  return out;
}

/** `Platform.seal`'s nonce (12) and tag (16) around the ciphertext (as long as the plaintext). */
const SEAL_OVERHEAD = 12 + 16;

/** Thrown when stored bytes do not authenticate for this account: tampered, moved or foreign. */
export class RecordIntegrityError extends Error {
  override readonly name = 'RecordIntegrityError';
  constructor(readonly account: string) {
    super('stored record failed authentication (tampered, moved from another account, or sealed by another fleet)');
  }
}

/** @throws RecordIntegrityError */
export async function unsealRecord(platform: Platform, account: string, stored: Uint8Array, keys: RecordKeyring = DEFAULT_RECORD_KEYRING): Promise<AccountRecord> {
  const version = stored[0];
  if (stored.length < 1 || (version !== RECORD_FORMAT_VERSION && version !== LEGACY_FORMAT_VERSION)) throw new RecordIntegrityError(account);
  const aad = recordAad(account, version);
  let plain: Uint8Array | null = null;
  for (const label of [keys.current, ...keys.all.filter((l) => l !== keys.current)]) {
    plain = await platform.unseal(label, aad, stored.subarray(1));
    if (plain) break;
  }
  if (!plain) throw new RecordIntegrityError(account);
  try {
    return decodeRecord(version === RECORD_FORMAT_VERSION ? unpadRecord(plain) : plain, version);
  } catch {
    throw new RecordIntegrityError(account);
  }
}
