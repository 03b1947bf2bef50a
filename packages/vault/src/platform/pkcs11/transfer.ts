/**
 * Moving the fleet's keys from one PKCS#11 token to another without them ever being in
 * the clear outside a token (issue 15; docs/pkcs11.md §"Key transfer between tokens").
 *
 * Mechanisms (all present on SoftHSM2 2.6 and on the common network HSMs):
 *
 *   joining token   P-256 transport key pair `coffer-node-transport-v1` (CKA_DERIVE, never
 *                   extractable), made by `fleet node-key`; its public key is the node's
 *                   identity.
 *   source token    a fresh P-256 key pair per package (session objects), and
 *                   Z    = CKM_ECDH1_DERIVE(ephemeral private, transport public), CKD_NULL,
 *                          as a session AES-256 key with CKA_DERIVE only;
 *                   Wi   = CKM_AES_CBC_ENCRYPT_DATA(Z, iv = 0, SHA-256(context || enc ||
 *                          len(label) || label || kind)), one AES-256 wrapping key per
 *                          fleet key (AES as the PRF of a KDF: SoftHSM2 has no HKDF and
 *                          no CKD_SHA256_KDF, see below);
 *                   wrapped_i = CKM_AES_KEY_WRAP_PAD(Wi, fleet key i)   (RFC 5649)
 *   joining token   the same Z (transport private × enc) and Wi, then C_UnwrapKey into
 *                   session objects, checked, then C_CopyObject to token objects with
 *                   CKA_MODIFIABLE false (seal and ECDH keys: true, as keys.ts makes them).
 *
 * Why these: the fleet's HPKE key is a P-256 *private* key, which RSA-OAEP cannot wrap
 * (and SoftHSM2's OAEP is SHA-1 only), so an AES wrapping key is needed; ECDH on P-256
 * is the only key agreement SoftHSM2 has (no X25519). CKM_AES_KEY_WRAP_PAD wraps keys of
 * any length (PKCS#8 for the private key) and authenticates them (RFC 5649's integrity
 * check): a wrong Wi, i.e. another recipient, another context or another label, makes
 * C_UnwrapKey fail. SoftHSM2 only takes CKD_NULL for ECDH (the raw x-coordinate), so the
 * context binding is done by a second derivation inside the token: each Wi depends on
 * the fleet key ID, the recipient's public key, the fleet file, `enc` and the key's own
 * label and kind (the caller's `context`), so a package cannot be replayed to another
 * node, re-labelled or grafted onto another fleet.
 *
 * The fleet keys on the token that exports them must be CKA_EXTRACTABLE (PKCS#11 wraps
 * nothing else) and are CKA_SENSITIVE (C_GetAttributeValue never gives their value).
 * The copies a joining token receives are CKA_SENSITIVE and, unless the operator asks
 * for another ceremony source, CKA_EXTRACTABLE false. PKCS#11 marks every unwrapped key
 * CKA_NEVER_EXTRACTABLE false and CKA_ALWAYS_SENSITIVE false (it has been outside the
 * token, wrapped); only keys generated on the token itself can be NEVER_EXTRACTABLE.
 */
import { createECDH, createHash, ECDH, randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { AesCBC, AesGCM, ECDH1, Handle, Mechanism, PKCS11, Template } from 'pkcs11js';
import { PlatformError } from '../../core/platform.js';
import { ckrOf, describe, toPlatformError } from './errors.js';
import { ecdhKeyPairTemplates, ecPointToRaw, findByLabel, findKey, macKeyTemplate, P256_EC_PARAMS, readAttribute, sealKeyTemplate } from './keys.js';
import type { KeyKind } from './keys.js';
import type { Pkcs11Options } from './token.js';
import { openToken } from './token.js';

export const PKCS11_TRANSFER_SUITE = 'PKCS#11: ECDH-ES(P-256, CKD_NULL) + CKM_AES_CBC_ENCRYPT_DATA, CKM_AES_KEY_WRAP_PAD';

/** What a transferred key is for (decides the unwrap template). */
export type TransferKind = 'seal' | 'mac' | 'ecdh';

export interface TransferItem {
  readonly label: string;
  readonly kind: TransferKind;
}

export interface WrappedItem extends TransferItem {
  /** CKM_AES_KEY_WRAP_PAD output. */
  readonly wrapped: Uint8Array;
}

export interface WrappedKeys {
  /** The source token's ephemeral P-256 public key (SEC1 uncompressed). */
  readonly enc: Uint8Array;
  readonly keys: readonly WrappedItem[];
}

export class KeyTransferError extends Error {
  override readonly name = 'KeyTransferError';
}

const KIND: Record<TransferKind, KeyKind> = { seal: 'seal', mac: 'mac', ecdh: 'ecdh-private' };

/** The 32 bytes each wrapping key Wi is derived from. */
export function wrapKeyInput(context: Uint8Array, enc: Uint8Array, item: TransferItem): Buffer {
  const label = Buffer.from(item.label, 'utf8');
  if (label.length > 255) throw new RangeError('label too long');
  return createHash('sha256').update(context).update(enc).update(Buffer.from([label.length])).update(label).update(item.kind).digest();
}

const EPHEMERAL_PUBLIC: Template = [
  { type: pkcs11js.CKA_TOKEN, value: false },
  { type: pkcs11js.CKA_EC_PARAMS, value: P256_EC_PARAMS },
];
const EPHEMERAL_PRIVATE: Template = [
  { type: pkcs11js.CKA_TOKEN, value: false },
  { type: pkcs11js.CKA_PRIVATE, value: true },
  { type: pkcs11js.CKA_SENSITIVE, value: true },
  { type: pkcs11js.CKA_EXTRACTABLE, value: false },
  { type: pkcs11js.CKA_DERIVE, value: true },
];

/** Z: the ECDH x-coordinate as a session AES key that can only derive. */
const Z_TEMPLATE: Template = [
  { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
  { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
  { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
  { type: pkcs11js.CKA_TOKEN, value: false },
  { type: pkcs11js.CKA_PRIVATE, value: true },
  { type: pkcs11js.CKA_SENSITIVE, value: true },
  { type: pkcs11js.CKA_EXTRACTABLE, value: false },
  { type: pkcs11js.CKA_DERIVE, value: true },
  { type: pkcs11js.CKA_ENCRYPT, value: false },
  { type: pkcs11js.CKA_DECRYPT, value: false },
  { type: pkcs11js.CKA_WRAP, value: false },
  { type: pkcs11js.CKA_UNWRAP, value: false },
];

function wrappingKeyTemplate(use: 'wrap' | 'unwrap'): Template {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
    { type: pkcs11js.CKA_TOKEN, value: false },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_WRAP, value: use === 'wrap' },
    { type: pkcs11js.CKA_UNWRAP, value: use === 'unwrap' },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
}

function deriveZ(p: PKCS11, s: Handle, privateKey: Handle, peer: Uint8Array): Handle {
  return p.C_DeriveKey(s, ecdhMechanism(Buffer.from(peer)), privateKey, Z_TEMPLATE);
}

function ecdhMechanism(peer: Buffer): Mechanism {
  const parameter: ECDH1 = { type: pkcs11js.CK_PARAMS_EC_DH, kdf: pkcs11js.CKD_NULL, publicData: peer };
  return { mechanism: pkcs11js.CKM_ECDH1_DERIVE, parameter };
}

function deriveW(p: PKCS11, s: Handle, z: Handle, input: Buffer, use: 'wrap' | 'unwrap'): Handle {
  const parameter: AesCBC = { type: pkcs11js.CK_PARAMS_AES_CBC, iv: Buffer.alloc(16), data: input };
  return p.C_DeriveKey(s, { mechanism: pkcs11js.CKM_AES_CBC_ENCRYPT_DATA, parameter }, z, wrappingKeyTemplate(use));
}

const KWP = { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD };

/** Session objects made during a transfer, destroyed at the end whatever happens. */
function destroyAll(p: PKCS11, s: Handle, handles: Handle[]): void {
  for (const h of handles) {
    try {
      p.C_DestroyObject(s, h);
    } catch {
      // session objects vanish with the session anyway
    }
  }
}

function checkItems(items: readonly TransferItem[]): void {
  const seen = new Set<string>();
  for (const it of items) {
    if (typeof it.label !== 'string' || it.label === '' || !(it.kind in KIND)) throw new TypeError('transfer items need a label and a kind');
    if (seen.has(it.label)) throw new TypeError(`label ${it.label} twice`);
    seen.add(it.label);
  }
}

function checkPoint(point: Uint8Array, what: string): void {
  try {
    if (point.length !== 65 || point[0] !== 0x04) throw new Error('length');
    ECDH.convertKey(Buffer.from(point), 'prime256v1', undefined, undefined, 'uncompressed'); // throws for points off the curve
  } catch {
    throw new KeyTransferError(`${what}: not an uncompressed P-256 point`);
  }
}

/**
 * Wraps the keys `items` of the token in `opts` to `recipient` (the joining node's
 * transport public key). Nothing but the wrapped keys and `enc` leaves the token.
 * @param context bytes that bind the package (the ceremony passes a hash of the fleet
 *   key ID, the recipient and the fleet file); the joining side must pass the same
 * @throws KeyTransferError when a key is not exportable from this token; PlatformError
 */
export async function wrapKeysFor(opts: Pkcs11Options, recipient: Uint8Array, context: Uint8Array, items: readonly TransferItem[]): Promise<WrappedKeys> {
  checkItems(items);
  checkPoint(recipient, 'recipient');
  const token = openToken({ ...opts, poolSize: 1 });
  try {
    return await token.pool.use((s) => {
      const p = token.pkcs11;
      const temp: Handle[] = [];
      try {
        let eph: { publicKey: Handle; privateKey: Handle };
        try {
          eph = p.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, EPHEMERAL_PUBLIC, EPHEMERAL_PRIVATE);
        } catch (err) {
          throw toPlatformError(err, 'generating the ephemeral P-256 key pair');
        }
        temp.push(eph.publicKey, eph.privateKey);
        const enc = ecPointToRaw(readAttribute(p, s, eph.publicKey, pkcs11js.CKA_EC_POINT));
        const z = deriveZ(p, s, eph.privateKey, recipient);
        temp.push(z);
        const keys: WrappedItem[] = [];
        for (const item of items) {
          const key = findKey(p, s, KIND[item.kind], item.label);
          const w = deriveW(p, s, z, wrapKeyInput(context, enc, item), 'wrap');
          temp.push(w);
          let wrapped: Buffer;
          try {
            wrapped = p.C_WrapKey(s, KWP, w, key, Buffer.alloc(1024));
          } catch (err) {
            const rv = ckrOf(err);
            if (rv === pkcs11js.CKR_KEY_UNEXTRACTABLE || rv === pkcs11js.CKR_KEY_NOT_WRAPPABLE) {
              throw new KeyTransferError(
                `key ${item.label} on token ${opts.tokenLabel} is not exportable (CKA_EXTRACTABLE false: a token that joined the fleet, or keys made by \`keys create\`): ` +
                  'export from the ceremony source (the token that ran fleet init / fleet rotate, or one that joined with keep-exportable)',
              );
            }
            throw toPlatformError(err, `C_WrapKey of ${item.label}`);
          }
          keys.push({ ...item, wrapped: Uint8Array.from(wrapped) });
        }
        return { enc, keys };
      } finally {
        destroyAll(p, s, temp);
      }
    });
  } finally {
    await token.close();
  }
}

/** The template a transferred key enters the token with (as a session object first). */
function unwrapTemplate(item: TransferItem, exportable: boolean): Template {
  const base = item.kind === 'seal' ? sealKeyTemplate(item.label) : item.kind === 'mac' ? macKeyTemplate(item.label) : ecdhKeyPairTemplates(item.label).privateKey;
  // C_UnwrapKey takes the length from the wrapped key and refuses CKA_MODIFIABLE false
  // (SoftHSM2: CKR_ATTRIBUTE_READ_ONLY); the token copy made afterwards sets it.
  const drop = new Set([pkcs11js.CKA_VALUE_LEN, pkcs11js.CKA_TOKEN, pkcs11js.CKA_MODIFIABLE, pkcs11js.CKA_EXTRACTABLE]);
  return [...base.filter((a) => !drop.has(a.type)), { type: pkcs11js.CKA_TOKEN, value: false }, { type: pkcs11js.CKA_EXTRACTABLE, value: exportable }];
}

export interface UnwrapOptions {
  /**
   * For every `ecdh` item: the public key it must match (from the fleet file, already
   * checked against the pinned key ID). The public key object is created from it.
   */
  readonly publicKeys: Readonly<Record<string, Uint8Array>>;
  /** Keep the received keys CKA_EXTRACTABLE (this token may then export them in turn). */
  readonly exportable?: boolean;
}

export interface UnwrapReport {
  /** Labels stored on the token. */
  readonly imported: readonly string[];
  /** Labels the token already held with the same key. */
  readonly existing: readonly string[];
}

/**
 * Unwraps `wrapped` (made by `wrapKeysFor` for this token's transport key
 * `transportLabel`) into this token. All keys are unwrapped and checked as session
 * objects first (a P-256 key against its public key by an ECDH; a key whose label the
 * token already holds against that key), and only then copied to the token as
 * non-modifiable objects: a bad package leaves the token as it was.
 * @throws KeyTransferError when the package does not open here or a check fails
 */
export async function unwrapKeys(opts: Pkcs11Options, transportLabel: string, wrapped: WrappedKeys, context: Uint8Array, o: UnwrapOptions): Promise<UnwrapReport> {
  checkItems(wrapped.keys);
  checkPoint(wrapped.enc, 'enc');
  const token = openToken({ ...opts, poolSize: 1 });
  try {
    return await token.pool.use((s) => {
      const p = token.pkcs11;
      const temp: Handle[] = [];
      try {
        const transport = findKey(p, s, 'ecdh-private', transportLabel);
        const z = deriveZ(p, s, transport, wrapped.enc);
        temp.push(z);
        const staged: { item: WrappedItem; handle: Handle; existing: Handle | undefined }[] = [];
        for (const item of wrapped.keys) {
          const w = deriveW(p, s, z, wrapKeyInput(context, wrapped.enc, item), 'unwrap');
          temp.push(w);
          let handle: Handle;
          try {
            handle = p.C_UnwrapKey(s, KWP, w, Buffer.from(item.wrapped), unwrapTemplate(item, o.exportable === true));
          } catch (err) {
            throw new KeyTransferError(`key ${item.label} does not unwrap on this token (${describe(err)}): the package was made for another node, another fleet, or altered`);
          }
          temp.push(handle);
          const present = findByLabel(p, s, KIND[item.kind], item.label).filter((h) => !h.equals(handle));
          if (present.length > 1) throw new KeyTransferError(`token holds more than one ${item.label}`);
          staged.push({ item, handle, existing: present[0] });
        }
        for (const st of staged) check(p, s, st.item, st.handle, st.existing, o.publicKeys);
        const imported: string[] = [];
        const existing: string[] = [];
        for (const st of staged) {
          if (st.existing !== undefined) {
            existing.push(st.item.label);
            continue;
          }
          try {
            // Seal and ECDH keys stay modifiable, as keys.ts makes them, so that the
            // platform can copy them into a session object; the MAC key not.
            p.C_CopyObject(s, st.handle, [
              { type: pkcs11js.CKA_TOKEN, value: true },
              { type: pkcs11js.CKA_MODIFIABLE, value: st.item.kind !== 'mac' },
            ]);
            if (st.item.kind === 'ecdh' && findByLabel(p, s, 'ecdh-public', st.item.label).length === 0) {
              p.C_CreateObject(s, publicKeyObject(st.item.label, o.publicKeys[st.item.label]!));
            }
          } catch (err) {
            throw toPlatformError(err, `storing ${st.item.label} on the token`);
          }
          imported.push(st.item.label);
        }
        return { imported, existing };
      } finally {
        destroyAll(p, s, temp);
      }
    });
  } finally {
    await token.close();
  }
}

function publicKeyObject(label: string, point: Uint8Array): Template {
  const t = ecdhKeyPairTemplates(label).publicKey;
  return [...t, { type: pkcs11js.CKA_EC_POINT, value: Buffer.concat([Buffer.from([0x04, 0x41]), point]) }];
}

/** A staged key must be the key it claims to be before anything is stored. */
function check(p: PKCS11, s: Handle, item: TransferItem, handle: Handle, existing: Handle | undefined, publicKeys: Readonly<Record<string, Uint8Array>>): void {
  if (item.kind === 'ecdh') {
    const pub = publicKeys[item.label];
    if (pub === undefined) throw new KeyTransferError(`no public key given for ${item.label}`);
    checkPoint(pub, item.label);
    // ECDH with a throwaway key: the unwrapped private key must agree with `pub`.
    const probe = createECDH('prime256v1');
    probe.generateKeys();
    const expected = probe.computeSecret(pub);
    if (!ecdhValue(p, s, handle, probe.getPublicKey()).equals(expected)) throw new KeyTransferError(`the private key ${item.label} in the package does not match the fleet's public key`);
    if (existing !== undefined) {
      const have = findKey(p, s, 'ecdh-public', item.label);
      if (!Buffer.from(ecPointToRaw(readAttribute(p, s, have, pkcs11js.CKA_EC_POINT))).equals(Buffer.from(pub))) {
        throw new KeyTransferError(`this token's ${item.label} is another key (it belongs to another fleet: retire it first)`);
      }
    }
    return;
  }
  if (existing === undefined) return;
  // Same label on the token already: it must be the same secret. Compare outputs.
  const data = randomBytes(32);
  const same = item.kind === 'mac' ? hmac(p, s, handle, data).equals(hmac(p, s, existing, data)) : gcmTag(p, s, handle, data).equals(gcmTag(p, s, existing, data));
  if (!same) throw new KeyTransferError(`this token's ${item.label} is another key (it belongs to another fleet: retire it first)`);
}

function ecdhValue(p: PKCS11, s: Handle, key: Handle, peer: Buffer): Buffer {
  const secret = p.C_DeriveKey(s, ecdhMechanism(peer), key, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
    { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
    { type: pkcs11js.CKA_TOKEN, value: false },
    { type: pkcs11js.CKA_SENSITIVE, value: false },
    { type: pkcs11js.CKA_EXTRACTABLE, value: true },
  ]);
  try {
    return readAttribute(p, s, secret, pkcs11js.CKA_VALUE);
  } finally {
    destroyAll(p, s, [secret]);
  }
}

function hmac(p: PKCS11, s: Handle, key: Handle, data: Buffer): Buffer {
  p.C_SignInit(s, { mechanism: pkcs11js.CKM_SHA256_HMAC }, key);
  return Buffer.from(p.C_Sign(s, data, Buffer.alloc(32)));
}

function gcmTag(p: PKCS11, s: Handle, key: Handle, data: Buffer): Buffer {
  const iv = Buffer.alloc(12);
  const parameter: AesGCM = { type: pkcs11js.CK_PARAMS_AES_GCM, iv, aad: Buffer.alloc(0), ivBits: 96, tagBits: 128 };
  p.C_EncryptInit(s, { mechanism: pkcs11js.CKM_AES_GCM, parameter }, key);
  return Buffer.from(p.C_Encrypt(s, data, Buffer.alloc(data.length + 16)));
}

/** Security attributes of one key object, for `fleet status` and tests. */
export interface KeyAttributes {
  readonly label: string;
  readonly extractable: boolean;
  readonly sensitive: boolean;
  readonly neverExtractable: boolean;
  readonly alwaysSensitive: boolean;
  readonly local: boolean;
  readonly modifiable: boolean;
  readonly private: boolean;
}

/** Reads CKA_EXTRACTABLE, CKA_SENSITIVE, … of the key `label` (secret or private). */
export async function inspectKey(opts: Pkcs11Options, label: string, kind: TransferKind): Promise<KeyAttributes> {
  const token = openToken({ ...opts, poolSize: 1 });
  try {
    return await token.pool.use((s) => {
      const p = token.pkcs11;
      const h = findKey(p, s, KIND[kind], label);
      const types = [pkcs11js.CKA_EXTRACTABLE, pkcs11js.CKA_SENSITIVE, pkcs11js.CKA_NEVER_EXTRACTABLE, pkcs11js.CKA_ALWAYS_SENSITIVE, pkcs11js.CKA_LOCAL, pkcs11js.CKA_MODIFIABLE, pkcs11js.CKA_PRIVATE];
      const v = p.C_GetAttributeValue(s, h, types.map((type) => ({ type }))).map((a) => a.value[0] === 1);
      return { label, extractable: v[0]!, sensitive: v[1]!, neverExtractable: v[2]!, alwaysSensitive: v[3]!, local: v[4]!, modifiable: v[5]!, private: v[6]! };
    });
  } catch (err) {
    throw err instanceof PlatformError ? err : toPlatformError(err, `inspecting ${label}`);
  } finally {
    await token.close();
  }
}

/**
 * Destroys the token objects of `items` (both halves of a P-256 key pair): `fleet leave`.
 * @returns the labels that were present
 */
export async function destroyKeys(opts: Pkcs11Options, items: readonly TransferItem[]): Promise<string[]> {
  checkItems(items);
  const token = openToken({ ...opts, poolSize: 1 });
  try {
    return await token.pool.use((s) => {
      const p = token.pkcs11;
      const removed: string[] = [];
      for (const item of items) {
        const kinds: KeyKind[] = item.kind === 'ecdh' ? ['ecdh-private', 'ecdh-public'] : [KIND[item.kind]];
        let any = false;
        for (const k of kinds) {
          for (const h of findByLabel(p, s, k, item.label)) {
            try {
              p.C_DestroyObject(s, h);
            } catch (err) {
              throw toPlatformError(err, `destroying ${item.label}`);
            }
            any = true;
          }
        }
        if (any) removed.push(item.label);
      }
      return removed;
    });
  } finally {
    await token.close();
  }
}
