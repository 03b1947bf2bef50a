/**
 * Key objects on the token: the templates that create them and the look-ups that find
 * them by CKA_LABEL.
 */
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11, Template } from 'pkcs11js';
import { PlatformError } from '../../core/platform.js';
import { toPlatformError } from './errors.js';

/** DER of the P-256 (secp256r1, prime256v1) curve OID 1.2.840.10045.3.1.7: CKA_EC_PARAMS. */
export const P256_EC_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');

/** What a key is for; decides the object class and key types a look-up accepts. */
export type KeyKind = 'seal' | 'mac' | 'ecdh-private' | 'ecdh-public';

const CLASS: Record<KeyKind, number> = {
  seal: pkcs11js.CKO_SECRET_KEY,
  mac: pkcs11js.CKO_SECRET_KEY,
  'ecdh-private': pkcs11js.CKO_PRIVATE_KEY,
  'ecdh-public': pkcs11js.CKO_PUBLIC_KEY,
};

const KEY_TYPES: Record<KeyKind, readonly number[]> = {
  seal: [pkcs11js.CKK_AES],
  mac: [pkcs11js.CKK_GENERIC_SECRET, pkcs11js.CKK_SHA256_HMAC],
  'ecdh-private': [pkcs11js.CKK_EC],
  'ecdh-public': [pkcs11js.CKK_EC],
};

const DESCRIPTION: Record<KeyKind, string> = {
  seal: 'AES secret key',
  mac: 'HMAC secret key',
  'ecdh-private': 'P-256 private key',
  'ecdh-public': 'P-256 public key',
};

/**
 * Handles of the token objects with CKA_LABEL `label` and the class of `kind` (at most
 * two: enough to tell "none", "one" and "ambiguous" apart). Uses the session's find
 * operation, so the caller must hold the session. Token objects only (CKA_TOKEN true):
 * a key's session copy (pkcs11-platform.ts) and the session objects of a key transfer
 * carry the same label and are not other keys.
 */
export function findByLabel(pkcs11: PKCS11, session: Handle, kind: KeyKind, label: string): Handle[] {
  try {
    pkcs11.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: CLASS[kind] },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_TOKEN, value: true },
    ]);
    try {
      return pkcs11.C_FindObjects(session, 2);
    } finally {
      pkcs11.C_FindObjectsFinal(session);
    }
  } catch (err) {
    throw toPlatformError(err, `finding ${DESCRIPTION[kind]} ${JSON.stringify(label)}`);
  }
}

/**
 * The one usable key of `kind` labelled `label`.
 * @throws PlatformError key-missing when there is none, several, or one of the wrong type
 */
export function findKey(pkcs11: PKCS11, session: Handle, kind: KeyKind, label: string): Handle {
  const found = findByLabel(pkcs11, session, kind, label);
  const [handle, other] = found;
  const what = `${DESCRIPTION[kind]} ${JSON.stringify(label)}`;
  if (handle === undefined) throw new PlatformError(`pkcs11: no ${what} on the token`, 'key-missing');
  if (other !== undefined) throw new PlatformError(`pkcs11: more than one ${what} on the token`, 'key-missing');
  let keyType: number;
  try {
    keyType = readUlong(pkcs11, session, handle, pkcs11js.CKA_KEY_TYPE);
  } catch (err) {
    throw toPlatformError(err, `reading the type of ${what}`);
  }
  if (!KEY_TYPES[kind].includes(keyType)) {
    throw new PlatformError(`pkcs11: ${what} has key type 0x${keyType.toString(16)}, not usable here`, 'key-missing');
  }
  if (kind === 'ecdh-private' || kind === 'ecdh-public') {
    let params: Buffer;
    try {
      params = readAttribute(pkcs11, session, handle, pkcs11js.CKA_EC_PARAMS);
    } catch (err) {
      throw toPlatformError(err, `reading the curve of ${what}`);
    }
    if (!params.equals(P256_EC_PARAMS)) throw new PlatformError(`pkcs11: ${what} is not on P-256`, 'key-missing');
  }
  return handle;
}

export function readAttribute(pkcs11: PKCS11, session: Handle, object: Handle, type: number): Buffer {
  const [attr] = pkcs11.C_GetAttributeValue(session, object, [{ type }]);
  if (attr === undefined) throw new PlatformError('pkcs11: C_GetAttributeValue returned nothing', 'hsm-failure');
  return attr.value;
}

/** A CK_ULONG attribute (native byte order, 4 or 8 bytes). */
function readUlong(pkcs11: PKCS11, session: Handle, object: Handle, type: number): number {
  const v = readAttribute(pkcs11, session, object, type);
  if (v.length === 8) return Number(v.readBigUInt64LE(0));
  if (v.length === 4) return v.readUInt32LE(0);
  throw new PlatformError(`pkcs11: CK_ULONG attribute of ${v.length} bytes`, 'hsm-failure');
}

/**
 * Attributes every provisioned key shares: a token object, private (needs login),
 * sensitive, never extractable, and (but for the seal and P-256 keys, `modifiable`: their
 * templates say why) not modifiable (so nobody can widen its usage later without
 * destroying and recreating it).
 *
 * `exportable` (the fleet keys on the token that runs `fleet init`/`fleet rotate`):
 * CKA_EXTRACTABLE true, so that C_WrapKey can wrap them to a joining node's token (the
 * key ceremony, transfer.ts); still CKA_SENSITIVE, so their value is never readable.
 */
function hardened(label: string, exportable = false, modifiable = false): Template {
  return [
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: exportable },
    { type: pkcs11js.CKA_MODIFIABLE, value: modifiable },
  ];
}

/**
 * AES-256 for AES-GCM sealing and AES key wrap.
 *
 * CKA_MODIFIABLE true (issue 13, session 18): a token that refuses to copy a
 * non-modifiable object with CKA_TOKEN false (SoftHSM2 applies CKA_MODIFIABLE false to
 * every attribute of a copy's template) can then copy this key into a *session* object
 * once, at the vault's first seal (pkcs11-platform.ts), and every C_EncryptInit /
 * C_DecryptInit after that uses the session copy, which SoftHSM2's file backend does not
 * re-read per call. The copy is the same key (same records, same fleet), keeps
 * CKA_SENSITIVE and CKA_EXTRACTABLE (PKCS#11 2.40 §4.1.3: a copy may only turn
 * CKA_EXTRACTABLE off and CKA_SENSITIVE on, as may C_SetAttributeValue on this key); the
 * PIN holder may change usage flags and the label, which gives nothing CKA_ENCRYPT and
 * CKA_DECRYPT (any AES mechanism, ECB included) do not give already (docs/pkcs11.md).
 * Keys provisioned before are non-modifiable and keep being used in place.
 */
export function sealKeyTemplate(label: string, exportable = false): Template {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
    ...hardened(label, exportable, true),
    { type: pkcs11js.CKA_ENCRYPT, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: true },
    { type: pkcs11js.CKA_WRAP, value: true },
    { type: pkcs11js.CKA_UNWRAP, value: true },
    { type: pkcs11js.CKA_SIGN, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
}

/** A 256-bit generic secret for CKM_SHA256_HMAC. */
export function macKeyTemplate(label: string, exportable = false): Template {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
    { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
    ...hardened(label, exportable),
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_VERIFY, value: true },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
}

/** CKA_ALLOWED_MECHANISMS value: CK_MECHANISM_TYPEs as native CK_ULONGs (8 bytes on the 64-bit platforms pkcs11js builds for). */
export function mechanismList(...mechanisms: number[]): Buffer {
  const b = Buffer.alloc(8 * mechanisms.length);
  mechanisms.forEach((m, i) => b.writeBigUInt64LE(BigInt(m), 8 * i));
  return b;
}

/**
 * The public and private templates of a P-256 key pair for ECDH (CKA_DERIVE only).
 *
 * The private key is CKA_MODIFIABLE true with CKA_ALLOWED_MECHANISMS = CKM_ECDH1_DERIVE
 * alone (issue 13, session 18), so the platform can use it through a session copy like the
 * seal keys (`sealKeyTemplate`). CKA_ALLOWED_MECHANISMS is not modifiable (PKCS#11 2.40;
 * SoftHSM2: CKR_ATTRIBUTE_READ_ONLY, on a copy too), so the usage flags the PIN holder
 * could now switch on (CKA_SIGN, CKA_DECRYPT, …) open no mechanism but the ECDH the key
 * does already: an ECDSA signature with the fleet key stays impossible (tested).
 */
export function ecdhKeyPairTemplates(label: string, exportable = false): { publicKey: Template; privateKey: Template } {
  return {
    publicKey: [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
      { type: pkcs11js.CKA_EC_PARAMS, value: P256_EC_PARAMS },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: false },
      { type: pkcs11js.CKA_MODIFIABLE, value: false },
      { type: pkcs11js.CKA_VERIFY, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: false },
      { type: pkcs11js.CKA_WRAP, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
    ],
    privateKey: [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
      ...hardened(label, exportable, true),
      { type: pkcs11js.CKA_ALLOWED_MECHANISMS, value: mechanismList(pkcs11js.CKM_ECDH1_DERIVE) },
      { type: pkcs11js.CKA_DERIVE, value: true },
      { type: pkcs11js.CKA_SIGN, value: false },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: false },
    ],
  };
}

/**
 * The ECDH output object: a session-only generic secret that may leave the token.
 * Only the 32-byte x-coordinate leaves (RFC 9180 §7.1.1 `DH()`), never the private key.
 * Not CKA_PRIVATE: the value is read out at once (the host needs it for HPKE) and the
 * object destroyed, so hiding it from unauthenticated sessions of this application for
 * those microseconds protects nothing, while SoftHSM2 encrypts a private object's value
 * on creation and decrypts it on read: ~20% of its C_DeriveKey + read (issue 13,
 * scripts/bench-vault-hsm-ops.mjs). The private key itself stays CKA_PRIVATE, sensitive
 * and non-extractable (ecdhKeyPairTemplates).
 */
export const ECDH_SECRET_TEMPLATE: Template = [
  { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
  { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
  { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
  { type: pkcs11js.CKA_TOKEN, value: false },
  { type: pkcs11js.CKA_PRIVATE, value: false },
  { type: pkcs11js.CKA_SENSITIVE, value: false },
  { type: pkcs11js.CKA_EXTRACTABLE, value: true },
];

/**
 * What `C_CopyObject` gives a seal or ECDH key's session copy (pkcs11-platform.ts): a session
 * object (gone when the session that made it closes), itself not modifiable. Every
 * other attribute is the token key's: private, sensitive, CKA_EXTRACTABLE as it is.
 */
export const SESSION_COPY_TEMPLATE: Template = [
  { type: pkcs11js.CKA_TOKEN, value: false },
  { type: pkcs11js.CKA_MODIFIABLE, value: false },
];

/**
 * The 65 raw bytes of a CKA_EC_POINT. PKCS#11 2.40 §2.3.3 stores the point as a DER
 * OCTET STRING (`04 41 04 x y`); some modules give the raw point, accepted too.
 */
export function ecPointToRaw(value: Buffer): Uint8Array {
  if (value.length === 67 && value[0] === 0x04 && value[1] === 0x41 && value[2] === 0x04) {
    return Uint8Array.from(value.subarray(2));
  }
  if (value.length === 65 && value[0] === 0x04) return Uint8Array.from(value);
  throw new PlatformError(`pkcs11: unexpected CKA_EC_POINT encoding (${value.length} bytes)`, 'hsm-failure');
}
