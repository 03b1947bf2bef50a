/**
 * The node's trusted anchor on a PKCS#11 token (Platform.readAnchor/writeAnchor, issue 9).
 *
 * Two private token objects of class CKO_DATA (CKA_TOKEN, CKA_PRIVATE: invisible without
 * the user PIN; CKA_MODIFIABLE) with CKA_APPLICATION `coffer-anchor-v2`, the two *slots*.
 * A slot's value is its CKA_LABEL:
 *
 *   `coffer-anchor-v2 ` ‖ base64url(generation (8 bytes, big-endian) ‖ anchor ‖ check)
 *
 * where check is the first 8 bytes of SHA-256(generation ‖ anchor). A write stores the
 * next generation in place, with C_SetAttributeValue(CKA_LABEL), into the slot holding
 * the older generation (or a damaged one), so the newest complete write is always in the
 * other slot: a write cut short leaves that slot unreadable or failing its check, and a
 * read takes the highest intact generation. CKA_LABEL is modifiable on every PKCS#11
 * token (PKCS#11 2.40 §4.4, table 24, footnote 8), unlike a data object's CKA_VALUE,
 * which SoftHSM2 2.6 refuses to change (CKR_ATTRIBUTE_READ_ONLY). On SoftHSM2 this is
 * ~0.2 ms of CPU per write (the read-back included) against ~1.6 ms for creating a token object and destroying the
 * old one (a new object file, i.e. an inode allocated and one freed, each time; issue 13).
 * A token that refuses the in-place change gets the next generation as a new slot
 * object, and the slot it replaces is destroyed afterwards (the earlier scheme's order);
 * one that refuses a slot object itself (a label longer than it keeps: the label is ~113
 * characters for the 56-byte anchor) keeps the version 1 form below.
 *
 * Version 1 (before issue 13's fourth round): one object per generation labelled
 * `coffer-anchor-v1`, its CKA_VALUE `generation ‖ anchor`, written by C_CreateObject of
 * the next generation then C_DestroyObject of the older ones. Such objects are still
 * read (the highest generation of both forms wins), and the first write after an upgrade
 * continues their generation in a slot and then destroys them.
 *
 * C_CreateObject and C_SetAttributeValue of a token object return once the module has
 * stored it: an HSM writes its NVRAM; SoftHSM2 writes its object file WITHOUT fsync
 * (survives a crash of this process, not of the machine; docs/pkcs11.md): callers batch
 * anchor writes.
 */
import { createHash } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11, Template } from 'pkcs11js';
import { ANCHOR_MAX_BYTES, ANCHOR_VALUES_REMEMBERED, PlatformError } from '../../core/platform.js';
import { ckrOf, toPlatformError } from './errors.js';
import { readAttribute } from './keys.js';

/** Version 1: one object per generation with this label (read, and cleared by the next write). */
export const ANCHOR_LABEL = 'coffer-anchor-v1';
/** Version 2: the two slot objects' CKA_APPLICATION (their label holds the value). */
export const ANCHOR_SLOT_APPLICATION = 'coffer-anchor-v2';
const SLOT_PREFIX = 'coffer-anchor-v2 ';
const GENERATION_BYTES = 8;
const CHECK_BYTES = 8;

interface AnchorObject {
  readonly handle: Handle;
  readonly generation: bigint;
  readonly value: Buffer;
}

/** A v2 slot; `generation` null when its label is not an intact slot value (a write cut short). */
interface SlotObject {
  readonly handle: Handle;
  readonly generation: bigint | null;
  readonly value: Buffer | null;
}

/** Handles asked of C_FindObjects per call (see find). */
const FIND_BATCH = 16;
/** More anchor objects than this is a broken token, not writes cut short. */
const FIND_MAX = 4096;

function check(body: Buffer): Buffer {
  return createHash('sha256').update(body).digest().subarray(0, CHECK_BYTES);
}

/** The CKA_LABEL of a slot holding `value` at `generation`. */
export function encodeSlotLabel(generation: bigint, value: Buffer): string {
  const body = Buffer.alloc(GENERATION_BYTES + value.length);
  body.writeBigUInt64BE(generation, 0);
  value.copy(body, GENERATION_BYTES);
  return SLOT_PREFIX + Buffer.concat([body, check(body)]).toString('base64url');
}

/** The generation and value a slot's label holds, or null when it is not an intact slot value. */
export function decodeSlotLabel(label: Buffer): { generation: bigint; value: Buffer } | null {
  const text = label.toString('latin1');
  if (!text.startsWith(SLOT_PREFIX)) return null;
  const encoded = text.slice(SLOT_PREFIX.length);
  if (!/^[A-Za-z0-9_-]*$/.test(encoded)) return null;
  const raw = Buffer.from(encoded, 'base64url');
  if (raw.length < GENERATION_BYTES + CHECK_BYTES || raw.length > GENERATION_BYTES + ANCHOR_MAX_BYTES + CHECK_BYTES) return null;
  const body = raw.subarray(0, raw.length - CHECK_BYTES);
  if (!check(body).equals(raw.subarray(raw.length - CHECK_BYTES))) return null;
  return { generation: body.readBigUInt64BE(0), value: Buffer.from(body.subarray(GENERATION_BYTES)) };
}

/**
 * Every object matching `template`. C_FindObjects gives at most the count asked for per
 * call: it is called until it gives fewer, so that no anchor object is left unseen (a
 * newer generation missed would be a rollback), however many writes left objects behind.
 */
function find(p: PKCS11, s: Handle, template: Template): Handle[] {
  try {
    p.C_FindObjectsInit(s, template);
    try {
      const all: Handle[] = [];
      for (;;) {
        const some = p.C_FindObjects(s, FIND_BATCH);
        all.push(...some);
        if (some.length < FIND_BATCH) return all;
        // A token that never stops answering: fail closed rather than loop.
        if (all.length > FIND_MAX) throw new PlatformError(`pkcs11: more than ${FIND_MAX} anchor objects on the token`, 'hsm-failure');
      }
    } finally {
      p.C_FindObjectsFinal(s);
    }
  } catch (err) {
    throw toPlatformError(err, 'finding the anchor objects');
  }
}

function findV1(p: PKCS11, s: Handle): AnchorObject[] {
  const handles = find(p, s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL },
  ]);
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
  return out;
}

function findSlots(p: PKCS11, s: Handle): SlotObject[] {
  const handles = find(p, s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_APPLICATION, value: ANCHOR_SLOT_APPLICATION },
  ]);
  const out: SlotObject[] = [];
  for (const handle of handles) {
    let label: Buffer;
    try {
      label = readAttribute(p, s, handle, pkcs11js.CKA_LABEL);
    } catch (err) {
      // Gone since the search: not a slot. Any other failure fails the read or write: a slot
      // that could not be read must not be taken for damaged and written over, which could
      // leave only the older generation (a rollback) if that write were then cut short.
      if (ckrOf(err) === pkcs11js.CKR_OBJECT_HANDLE_INVALID) continue;
      throw toPlatformError(err, 'reading an anchor slot');
    }
    // A label that is not an intact slot value (a write cut short): damaged, written over first.
    const slot = decodeSlotLabel(label);
    out.push(slot ? { handle, ...slot } : { handle, generation: null, value: null });
  }
  return out;
}

/** The newest intact anchor of either form, and every anchor object found. */
function scan(p: PKCS11, s: Handle): { newest: { generation: bigint; value: Buffer } | null; v1: AnchorObject[]; slots: SlotObject[] } {
  const v1 = findV1(p, s);
  const slots = findSlots(p, s);
  let newest: { generation: bigint; value: Buffer } | null = null;
  for (const o of [...v1, ...slots]) {
    if (o.generation !== null && o.value !== null && (newest === null || o.generation > newest.generation)) newest = { generation: o.generation, value: o.value };
  }
  return { newest, v1, slots };
}

/** The newest anchor value on the token, or null before the first write. */
export function readAnchorObject(p: PKCS11, s: Handle): Uint8Array | null {
  const { newest } = scan(p, s);
  return newest === null ? null : Uint8Array.from(newest.value);
}

/** CK_RVs with which a token refuses a slot object's template (its label, typically): the version 1 form is written instead. */
const SLOT_REFUSED = new Set<number>([pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID, pkcs11js.CKR_ATTRIBUTE_READ_ONLY, pkcs11js.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11js.CKR_TEMPLATE_INCONSISTENT]);

/** A new slot object holding `label`; null when the token refuses the template (SLOT_REFUSED). */
function createSlot(p: PKCS11, s: Handle, label: string): Handle | null {
  try {
    return p.C_CreateObject(s, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_MODIFIABLE, value: true },
      { type: pkcs11js.CKA_APPLICATION, value: ANCHOR_SLOT_APPLICATION },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]);
  } catch (err) {
    const rv = ckrOf(err);
    if (rv !== undefined && SLOT_REFUSED.has(rv)) return null;
    throw toPlatformError(err, `writing the anchor (${ANCHOR_SLOT_APPLICATION})`);
  }
}

/** The version 1 form, for a token that refuses slot objects: a new object of the next generation, then the older objects destroyed. */
function writeV1(p: PKCS11, s: Handle, generation: bigint, value: Buffer, older: readonly { handle: Handle }[]): void {
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
  for (const o of older) destroyQuietly(p, s, o.handle);
}

/**
 * Whether the slot `handle` holds `label` exactly, read back after writing it: a token that
 * silently cut a long label short would otherwise leave a slot that reads as damaged, and
 * the anchor a generation behind what the vault was told is stored. A failed read counts
 * as not stored.
 */
function holdsLabel(p: PKCS11, s: Handle, handle: Handle, label: string): boolean {
  try {
    return readAttribute(p, s, handle, pkcs11js.CKA_LABEL).equals(Buffer.from(label, 'latin1'));
  } catch {
    return false;
  }
}

function destroyQuietly(p: PKCS11, s: Handle, handle: Handle): void {
  try {
    p.C_DestroyObject(s, handle);
  } catch {
    // a leftover is ignored by reads (an older generation or damaged) and removed by a later write
  }
}

/** The two slots as this process last wrote them: the next write needs no search. */
interface KnownSlots {
  readonly newest: { readonly handle: Handle; readonly generation: bigint };
  readonly older: Handle;
}

/**
 * The anchor of one token as seen by its one writer (the anchor thread). A write first
 * searches the token (~0.3 ms of CPU on SoftHSM2, which re-reads its object store for
 * every search) and remembers the two slots it leaves; the following writes read back
 * the newest slot's label and, when it still holds the remembered generation, go
 * straight to the older slot with that generation + 1. Nothing else should write the
 * anchor (docs/pkcs11.md); should a slot be gone or have moved on anyway, the write
 * falls back to the search. `forget()` after any failure of the session.
 */
export class AnchorSlots {
  #known: KnownSlots | null = null;
  /**
   * The value this writer last read or wrote (after a write that failed midway, either the
   * one before or the one attempted: null for no anchor). A write goes ahead only while the
   * token's newest value is one of them (Platform.writeAnchor, `anchor-moved`). Null until
   * the first read or write.
   */
  #expected: (Buffer | null)[] | null = null;

  /** The newest anchor value on the token, or null before the first write (always searches). */
  read(p: PKCS11, s: Handle): Uint8Array | null {
    this.#known = null;
    const value = readAnchorObject(p, s);
    this.#expected = [value === null ? null : Buffer.from(value)];
    return value;
  }

  write(p: PKCS11, s: Handle, value: Buffer): void {
    if (value.length > ANCHOR_MAX_BYTES) throw new PlatformError(`anchor: ${value.length} bytes, at most ${ANCHOR_MAX_BYTES}`, 'bad-argument');
    const expected = this.#expected;
    const attempted = Buffer.from(value);
    try {
      this.#write(p, s, value, expected);
      this.#expected = [attempted];
    } catch (err) {
      // Nothing written when the anchor moved; otherwise the token may hold either value.
      if (!(err instanceof PlatformError && err.code === 'anchor-moved') && expected !== null) this.#expected = [...expected, attempted].slice(-ANCHOR_VALUES_REMEMBERED);
      throw err;
    }
  }

  #write(p: PKCS11, s: Handle, value: Buffer, expected: readonly (Buffer | null)[] | null): void {
    const known = this.#known;
    this.#known = null;
    if (known !== null) {
      const generation = known.newest.generation + 1n;
      try {
        // The newest slot must still hold what this writer last put there (one attribute
        // read, no search): were another writer on the token, the remembered generation
        // could be behind it, and this write would go under the token's newest value; a
        // slot that moved on is settled by the search below (`anchor-moved`).
        const newest = decodeSlotLabel(readAttribute(p, s, known.newest.handle, pkcs11js.CKA_LABEL));
        if (newest?.generation !== known.newest.generation || (expected !== null && !expected.some((e) => e !== null && e.equals(newest.value)))) throw new Error('moved');
        // And the slot about to be written must not hold a newer generation than that: another
        // writer puts its next generation there (the slot this one left older), and writing
        // over it would hide that write from the check above.
        if (expected !== null && (decodeSlotLabel(readAttribute(p, s, known.older, pkcs11js.CKA_LABEL))?.generation ?? 0n) >= known.newest.generation) throw new Error('moved');
        const label = encodeSlotLabel(generation, value);
        p.C_SetAttributeValue(s, known.older, [{ type: pkcs11js.CKA_LABEL, value: label }]);
        if (!holdsLabel(p, s, known.older, label)) throw new Error('not stored as written');
        this.#known = { newest: { handle: known.older, generation }, older: known.newest.handle };
        return;
      } catch {
        // moved on, gone or will not change: search the token and write as on a first write
      }
    }
    this.#known = writeAnchorObject(p, s, value, expected);
  }

  /** After a failure of the session: the next write searches (what it expects is kept). */
  forget(): void {
    this.#known = null;
  }
}

/**
 * Stores `value` as the next generation: in place into the slot holding the older (or a
 * damaged) generation, or as a new slot while there are fewer than two; then removes
 * what the two newest slots make redundant (version 1 objects, extra slots). Returns the
 * two slots left (null when only one is).
 */
export function writeAnchorObject(p: PKCS11, s: Handle, value: Buffer, expected: readonly (Buffer | null)[] | null = null): KnownSlots | null {
  if (value.length > ANCHOR_MAX_BYTES) throw new PlatformError(`anchor: ${value.length} bytes, at most ${ANCHOR_MAX_BYTES}`, 'bad-argument');
  const { newest, v1, slots } = scan(p, s);
  if (expected !== null && !expected.some((e) => (e === null ? newest === null : newest !== null && e.equals(newest.value)))) {
    // Another process wrote this token's anchor since this one read or wrote it (a second
    // vault on the token, with its own copy of the store): writing over it would let each
    // count guesses from its own copy. Refused; nothing written.
    throw new PlatformError('pkcs11: the anchor on the token is not the one this process last read or wrote: another process writes it (a second vault on this token?); refusing to write over it', 'anchor-moved');
  }
  const generation = (newest?.generation ?? 0n) + 1n;
  const label = encodeSlotLabel(generation, value);
  // Damaged slots first, then the oldest generation: the newest intact one is never the target.
  const ordered = [...slots].sort((a, b) => (a.generation === b.generation ? 0 : a.generation === null ? -1 : b.generation === null ? 1 : a.generation < b.generation ? -1 : 1));
  let written: Handle | null;
  const target = slots.length >= 2 ? ordered[0]! : null;
  if (target === null) {
    written = createSlot(p, s, label);
  } else {
    try {
      p.C_SetAttributeValue(s, target.handle, [{ type: pkcs11js.CKA_LABEL, value: label }]);
      written = target.handle;
    } catch {
      // A token that will not change the label (or a slot it cannot update): the next
      // generation as a new object, the replaced slot destroyed below.
      written = createSlot(p, s, label);
    }
  }
  if (written !== null && !holdsLabel(p, s, written, label)) {
    // Stored otherwise than written (a label cut short): the version 1 form, which holds
    // the anchor in CKA_VALUE, replaces every slot.
    destroyQuietly(p, s, written);
    written = null;
  }
  if (written === null) {
    writeV1(p, s, generation, value, [...v1, ...slots]);
    return null;
  }
  // The new generation is stored; keep it and the newest other slot, remove the rest
  // (version 1 objects, a replaced or extra slot). A failure here leaves objects that
  // reads ignore and the next write removes.
  const keep = ordered.filter((o) => o.handle !== written && o.generation !== null).at(-1);
  for (const o of ordered) if (o.handle !== written && o !== keep) destroyQuietly(p, s, o.handle);
  for (const o of v1) destroyQuietly(p, s, o.handle);
  return keep ? { newest: { handle: written, generation }, older: keep.handle } : null;
}
