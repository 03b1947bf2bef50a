/**
 * An account's record: the only state the vault keeps, sealed by the HSM at rest.
 *
 * Stored bytes: formatVersion(1) || Platform.seal(recordSeal key, AAD, plaintext), with
 *   AAD = "coffer/vault/v1/record" || 0x00 || formatVersion || u16 len || account
 * so a record altered, moved to another account, or sealed by another fleet's key does
 * not open (spec §7).
 */
import { ByteReader, ByteWriter, DecodeError, decodeKsf, encodeKsf, LABELS, SIZES, utf8, type KsfParams } from '@coffer/protocol';
import { KEY_LABELS } from './key-labels.js';
import type { Platform } from './platform.js';

export const RECORD_FORMAT_VERSION = 1;

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
  /** K wrapped by the client under its OPAQUE export key; opaque to the vault. */
  readonly wrappedKey: Uint8Array;
  readonly pendingLogin: PendingLogin | null;
  /** A change of password in progress (after a login granted it). */
  readonly pendingRegistration: Expiring | null;
  /** Permission to replace this record, handed out by a successful login. */
  readonly changeGrant: Expiring | null;
  readonly seenLogins: readonly SeenLogin[];
}

export interface PendingRegistrationRecord {
  readonly state: 'pending-registration';
  readonly registration: Expiring;
}

/** What is left after the guess limit: a tombstone, so the answer is "locked", not "unknown". */
export interface ErasedRecord {
  readonly state: 'erased';
  readonly erasedAt: number;
}

export type AccountRecord = ActiveRecord | PendingRegistrationRecord | ErasedRecord;

const STATES = { 'pending-registration': 1, active: 2, erased: 3 } as const;
const MAX_SERVER_LOGIN_STATE = 256;
const MAX_SEEN_LOGINS = 64;

function writeExpiring(w: ByteWriter, e: Expiring | null): void {
  if (!e) w.u8(0);
  else w.u8(1).bytes(e.nonce).u64(e.expiresAt);
}

function readExpiring(r: ByteReader, field: string): Expiring | null {
  const present = r.u8(`${field}.present`);
  if (present === 0) return null;
  if (present !== 1) throw new DecodeError(`${field}.present: must be 0 or 1`, 'bad-field');
  return { nonce: r.bytes(SIZES.nonce, `${field}.nonce`), expiresAt: r.u64(`${field}.expiresAt`) };
}

export function encodeRecord(rec: AccountRecord): Uint8Array {
  const w = new ByteWriter().u8(STATES[rec.state]);
  switch (rec.state) {
    case 'pending-registration':
      writeExpiring(w, rec.registration);
      break;
    case 'erased':
      w.u64(rec.erasedAt);
      break;
    case 'active':
      w.u8(rec.guessLimit).u8(rec.guessesUsed);
      encodeKsf(w, rec.ksf);
      w.bytes(rec.registrationRecord).vec16(rec.wrappedKey);
      if (!rec.pendingLogin) w.u8(0);
      else w.u8(1).bytes(rec.pendingLogin.nonce).u64(rec.pendingLogin.expiresAt).vec16(rec.pendingLogin.serverLoginState);
      writeExpiring(w, rec.pendingRegistration);
      writeExpiring(w, rec.changeGrant);
      w.u8(rec.seenLogins.length);
      for (const s of rec.seenLogins) w.bytes(s.digest).u64(s.expiresAt);
      break;
  }
  return w.finish();
}

/** @throws DecodeError (only for a record that authenticated yet does not parse: a bug). */
export function decodeRecord(bytes: Uint8Array): AccountRecord {
  const r = new ByteReader(bytes);
  const state = r.u8('record.state');
  let rec: AccountRecord;
  if (state === STATES['pending-registration']) {
    const registration = readExpiring(r, 'registration');
    if (!registration) throw new DecodeError('registration: missing', 'bad-field');
    rec = { state: 'pending-registration', registration };
  } else if (state === STATES.erased) {
    rec = { state: 'erased', erasedAt: r.u64('erasedAt') };
  } else if (state === STATES.active) {
    const guessLimit = r.u8('guessLimit');
    const guessesUsed = r.u8('guessesUsed');
    const ksf = decodeKsf(r);
    const registrationRecord = r.bytes(SIZES.registrationRecord, 'registrationRecord');
    const wrappedKey = r.vec16('wrappedKey', SIZES.wrappedKeyMax);
    const hasLogin = r.u8('pendingLogin.present');
    let pendingLogin: PendingLogin | null = null;
    if (hasLogin === 1) {
      pendingLogin = { nonce: r.bytes(SIZES.nonce, 'pendingLogin.nonce'), expiresAt: r.u64('pendingLogin.expiresAt'), serverLoginState: r.vec16('pendingLogin.state', MAX_SERVER_LOGIN_STATE) };
    } else if (hasLogin !== 0) throw new DecodeError('pendingLogin.present: must be 0 or 1', 'bad-field');
    const pendingRegistration = readExpiring(r, 'pendingRegistration');
    const changeGrant = readExpiring(r, 'changeGrant');
    const n = r.u8('seenLogins.count');
    if (n > MAX_SEEN_LOGINS) throw new DecodeError('seenLogins: too many', 'bad-field');
    const seenLogins: SeenLogin[] = [];
    for (let i = 0; i < n; i++) seenLogins.push({ digest: r.bytes(16, 'seenLogins.digest'), expiresAt: r.u64('seenLogins.expiresAt') });
    if (guessLimit < 1 || guessesUsed > guessLimit) throw new DecodeError('guess counter out of range', 'bad-field');
    rec = { state: 'active', guessLimit, guessesUsed, ksf, registrationRecord, wrappedKey, pendingLogin, pendingRegistration, changeGrant, seenLogins };
  } else {
    throw new DecodeError(`record.state: unknown ${state}`, 'bad-field');
  }
  r.end('record');
  return rec;
}

export function recordAad(account: string, formatVersion: number): Uint8Array {
  return new ByteWriter().bytes(utf8(LABELS.recordSeal)).u8(0).u8(formatVersion).vec16(utf8(account)).finish();
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

export async function sealRecord(platform: Platform, account: string, rec: AccountRecord, keys: RecordKeyring = DEFAULT_RECORD_KEYRING): Promise<Uint8Array> {
  const sealed = await platform.seal(keys.current, recordAad(account, RECORD_FORMAT_VERSION), encodeRecord(rec));
  const out = new Uint8Array(1 + sealed.length);
  out[0] = RECORD_FORMAT_VERSION;
  out.set(sealed, 1);
  return out;
}

/** Thrown when stored bytes do not authenticate for this account: tampered, moved or foreign. */
export class RecordIntegrityError extends Error {
  override readonly name = 'RecordIntegrityError';
  constructor(readonly account: string) {
    super('stored record failed authentication (tampered, moved from another account, or sealed by another fleet)');
  }
}

/** @throws RecordIntegrityError */
export async function unsealRecord(platform: Platform, account: string, stored: Uint8Array, keys: RecordKeyring = DEFAULT_RECORD_KEYRING): Promise<AccountRecord> {
  if (stored.length < 1 || stored[0] !== RECORD_FORMAT_VERSION) throw new RecordIntegrityError(account);
  const aad = recordAad(account, RECORD_FORMAT_VERSION);
  let plain: Uint8Array | null = null;
  for (const label of [keys.current, ...keys.all.filter((l) => l !== keys.current)]) {
    plain = await platform.unseal(label, aad, stored.subarray(1));
    if (plain) break;
  }
  if (!plain) throw new RecordIntegrityError(account);
  try {
    return decodeRecord(plain);
  } catch {
    throw new RecordIntegrityError(account);
  }
}
