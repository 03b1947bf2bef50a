/**
 * The node's trusted anchor on a PKCS#11 token (Platform.readAnchor/writeAnchor, issue 9).
 *
 * A private token object of class CKO_DATA labelled `coffer-anchor-v1` (CKA_TOKEN,
 * CKA_PRIVATE: invisible without the user PIN; CKA_MODIFIABLE). Its CKA_VALUE is
 * `generation (8 bytes, big-endian) || anchor`.
 *
 * SoftHSM2 2.6 refuses C_SetAttributeValue(CKA_VALUE) on a data object
 * (CKR_ATTRIBUTE_READ_ONLY), so a write creates a new object with the next generation
 * and only then destroys the older ones. A crash between the two leaves two objects; a
 * read takes the highest generation (the newest complete write) and a later write clears
 * the rest. C_CreateObject of a token object returns once the module has stored it: an
 * HSM writes its NVRAM; SoftHSM2 writes its object file WITHOUT fsync (survives a crash
 * of this process, not of the machine) and takes 8–36 ms per write here (docs/pkcs11.md):
 * callers batch anchor writes.
 */
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11 } from 'pkcs11js';
import { ANCHOR_MAX_BYTES, PlatformError } from '../../core/platform.js';
import { toPlatformError } from './errors.js';
import { readAttribute } from './keys.js';

export const ANCHOR_LABEL = 'coffer-anchor-v1';
const GENERATION_BYTES = 8;

interface AnchorObject {
  readonly handle: Handle;
  readonly generation: bigint;
  readonly value: Buffer;
}

function findAnchors(p: PKCS11, s: Handle): AnchorObject[] {
  let handles: Handle[];
  try {
    p.C_FindObjectsInit(s, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL },
    ]);
    try {
      handles = p.C_FindObjects(s, 16);
    } finally {
      p.C_FindObjectsFinal(s);
    }
  } catch (err) {
    throw toPlatformError(err, `finding the anchor ${ANCHOR_LABEL}`);
  }
  const out: AnchorObject[] = [];
  for (const handle of handles) {
    let raw: Buffer;
    try {
      raw = readAttribute(p, s, handle, pkcs11js.CKA_VALUE);
    } catch (err) {
      throw toPlatformError(err, `reading the anchor ${ANCHOR_LABEL}`);
    }
    if (raw.length < GENERATION_BYTES || raw.length > GENERATION_BYTES + ANCHOR_MAX_BYTES) {
      throw new PlatformError(`pkcs11: the anchor object ${ANCHOR_LABEL} holds ${raw.length} bytes: not written by this platform`, 'hsm-failure');
    }
    out.push({ handle, generation: raw.readBigUInt64BE(0), value: raw.subarray(GENERATION_BYTES) });
  }
  out.sort((a, b) => (a.generation < b.generation ? 1 : a.generation > b.generation ? -1 : 0));
  return out;
}

/** The newest anchor value on the token, or null before the first write. */
export function readAnchorObject(p: PKCS11, s: Handle): Uint8Array | null {
  const [newest] = findAnchors(p, s);
  return newest === undefined ? null : Uint8Array.from(newest.value);
}

/** Stores `value` as the next generation, then removes the older objects. */
export function writeAnchorObject(p: PKCS11, s: Handle, value: Buffer): void {
  if (value.length > ANCHOR_MAX_BYTES) throw new PlatformError(`anchor: ${value.length} bytes, at most ${ANCHOR_MAX_BYTES}`, 'bad-argument');
  const old = findAnchors(p, s);
  const generation = (old[0]?.generation ?? 0n) + 1n;
  const body = Buffer.alloc(GENERATION_BYTES + value.length);
  body.writeBigUInt64BE(generation, 0);
  value.copy(body, GENERATION_BYTES);
  try {
    p.C_CreateObject(s, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_MODIFIABLE, value: true },
      { type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL },
      { type: pkcs11js.CKA_APPLICATION, value: 'coffer-vault' },
      { type: pkcs11js.CKA_VALUE, value: body },
    ]);
  } catch (err) {
    throw toPlatformError(err, `writing the anchor ${ANCHOR_LABEL}`);
  }
  // The new generation is stored; a failure from here on leaves stale objects that the
  // next read ignores and the next write removes.
  for (const o of old) {
    try {
      p.C_DestroyObject(s, o.handle);
    } catch {
      // ignored: see above
    }
  }
}
