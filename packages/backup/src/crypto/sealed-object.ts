/**
 * Sealed objects: the one encryption format for everything Coffer stores
 * (spec/backup-format.md §5). STREAM (Hoang–Reyhanitabar–Rogaway–Vizár) over
 * AES-256-GCM in ~64 KiB segments, the shape of C2SP's chunked encryption and age:
 *
 *   header (40) = magic "CFOB" | version 1 | kind | log2(segment size) | flags 0 | object id (32)
 *   key         = HKDF-SHA256(ikm = object master key, salt = "", info = label || header)
 *   segment i   = AES-256-GCM(key, nonce = i as 11-byte big endian || final flag, aad = "")
 *
 * Binding the whole header into the key means a header swapped between objects or
 * repositories yields a different key, so every segment then fails. The final flag in
 * the nonce detects truncation and extension; the counter detects reordering, deletion
 * and splicing. Plaintext of a segment is released only after its tag verified.
 */
import { createCipheriv, createDecipheriv, hkdfSync } from 'node:crypto';
import { CofferError, DecryptionError } from '../errors.js';
import { BackupLabel } from './labels.js';

export const HEADER_BYTES = 40;
export const TAG_BYTES = 16;
export const MAGIC = Uint8Array.of(0x43, 0x46, 0x4f, 0x42); // "CFOB"
export const FORMAT_VERSION = 1;
/** Segment size of format version 1: 64 KiB of plaintext per segment. */
export const SEGMENT_LOG2 = 16;
export const SEGMENT_BYTES = 1 << SEGMENT_LOG2;
export const OBJECT_ID_BYTES = 32;

/** What an object holds. Stored in the header, so it is bound into the object key. */
export enum ObjectKind {
  Pack = 1,
  Index = 2,
  Snapshot = 3,
  Lock = 4,
}

export interface ObjectHeader {
  kind: ObjectKind;
  id: Uint8Array;
}

export function encodeHeader(h: ObjectHeader): Uint8Array {
  if (h.id.length !== OBJECT_ID_BYTES) throw new RangeError(`id: expected ${OBJECT_ID_BYTES} bytes`);
  if (typeof ObjectKind[h.kind] !== 'string') throw new RangeError(`kind: unknown object kind ${h.kind}`);
  const out = new Uint8Array(HEADER_BYTES);
  out.set(MAGIC, 0);
  out[4] = FORMAT_VERSION;
  out[5] = h.kind;
  out[6] = SEGMENT_LOG2;
  out[7] = 0;
  out.set(h.id, 8);
  return out;
}

/**
 * Parses and validates a header. Decoders MUST reject anything but the canonical
 * encoding (spec §5.1), so parse→serialise is the identity.
 * @throws CofferError 'corrupt' or 'unsupported-version'.
 */
export function decodeHeader(bytes: Uint8Array): ObjectHeader {
  if (bytes.length < HEADER_BYTES) throw new CofferError('corrupt', 'object is shorter than its header');
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new CofferError('corrupt', 'not a Coffer object (bad magic)');
  }
  if (bytes[4] !== FORMAT_VERSION) {
    throw new CofferError(
      'unsupported-version',
      `object format version ${bytes[4]} is not supported (this coffer reads version ${FORMAT_VERSION})`,
    );
  }
  const kind = bytes[5]!;
  if (!(kind in ObjectKind) || typeof ObjectKind[kind] !== 'string') {
    throw new CofferError('corrupt', `unknown object kind ${kind}`);
  }
  if (bytes[6] !== SEGMENT_LOG2) throw new CofferError('corrupt', `unsupported segment size 2^${bytes[6]}`);
  if (bytes[7] !== 0) throw new CofferError('corrupt', 'reserved header flags are set');
  return { kind: kind as ObjectKind, id: bytes.slice(8, HEADER_BYTES) };
}

function objectKey(master: Uint8Array, header: Uint8Array): Buffer {
  const info = Buffer.concat([Buffer.from(BackupLabel.objectKey, 'ascii'), header]);
  return Buffer.from(hkdfSync('sha256', master, new Uint8Array(0), info, 32));
}

function nonce(counter: number, final: boolean): Buffer {
  // STREAM nonce: 88-bit big-endian counter || 1 byte final flag (spec §5.3).
  const n = Buffer.alloc(12);
  n.writeUIntBE(counter, 5, 6);
  n[11] = final ? 1 : 0;
  return n;
}

/** Size of the sealed form of `plainLength` bytes. */
export function sealedLength(plainLength: number): number {
  const segments = Math.max(1, Math.ceil(plainLength / SEGMENT_BYTES));
  return HEADER_BYTES + plainLength + segments * TAG_BYTES;
}

/**
 * Plaintext length of a sealed object of `sealedLen` bytes, or throws 'corrupt' when
 * no plaintext has that sealed size (e.g. a final segment shorter than a tag).
 */
export function plainLength(sealedLen: number): number {
  const body = sealedLen - HEADER_BYTES;
  if (body < TAG_BYTES) throw new CofferError('corrupt', 'object is truncated');
  const full = SEGMENT_BYTES + TAG_BYTES;
  const segments = Math.ceil(body / full);
  const last = body - (segments - 1) * full;
  // A final segment is non-empty unless it is the only one (spec §5.3).
  if (last < TAG_BYTES || (segments > 1 && last === TAG_BYTES)) throw new CofferError('corrupt', 'object is truncated');
  return body - segments * TAG_BYTES;
}

/**
 * Seals a stream incrementally. Holds back up to one segment, because whether a full
 * segment is the final one is known only when more data arrives or `final()` is called.
 * The held-back bytes live in one fixed buffer, so small writes cost linear time.
 */
export class ObjectSealer {
  readonly header: Uint8Array;
  readonly #key: Buffer;
  readonly #segment = Buffer.allocUnsafe(SEGMENT_BYTES);
  #fill = 0;
  #counter = 0;
  #done = false;

  constructor(master: Uint8Array, header: ObjectHeader) {
    this.header = encodeHeader(header);
    this.#key = objectKey(master, this.header);
  }

  // Returns ciphertext and tag as two pieces: concatenating them would cost a copy and
  // an allocation per segment, and every consumer writes pieces anyway.
  #sealSegment(plain: Uint8Array, final: boolean): Buffer[] {
    const c = createCipheriv('aes-256-gcm', this.#key, nonce(this.#counter++, final));
    const body = c.update(plain);
    c.final();
    return [body, c.getAuthTag()];
  }

  /** Adds plaintext; returns the sealed bytes now complete, in pieces, to be concatenated. */
  update(data: Uint8Array): Buffer[] {
    if (this.#done) throw new Error('ObjectSealer: update after final');
    const out: Buffer[] = [];
    let off = 0;
    while (off < data.length) {
      // Only seal a full pending segment once we know more bytes follow it (spec §5.3).
      if (this.#fill === SEGMENT_BYTES) {
        out.push(...this.#sealSegment(this.#segment, false));
        this.#fill = 0;
      }
      // Whole segments with more bytes after them are sealed straight from the input.
      if (this.#fill === 0) {
        while (data.length - off > SEGMENT_BYTES) {
          out.push(...this.#sealSegment(data.subarray(off, off + SEGMENT_BYTES), false));
          off += SEGMENT_BYTES;
        }
      }
      const take = Math.min(SEGMENT_BYTES - this.#fill, data.length - off);
      // Copied, not aliased: the caller may reuse its buffer.
      this.#segment.set(data.subarray(off, off + take), this.#fill);
      this.#fill += take;
      off += take;
    }
    return out;
  }

  /** Seals the final segment; returns its pieces. */
  final(): Buffer[] {
    if (this.#done) throw new Error('ObjectSealer: final called twice');
    this.#done = true;
    return this.#sealSegment(this.#segment.subarray(0, this.#fill), true);
  }
}

/** One-shot seal of a whole plaintext. */
export function sealObject(master: Uint8Array, header: ObjectHeader, plaintext: Uint8Array): Buffer {
  const s = new ObjectSealer(master, header);
  return Buffer.concat([s.header, ...s.update(plaintext), ...s.final()]);
}

function checkExpected(got: ObjectHeader, expected: ObjectHeader): void {
  if (got.kind !== expected.kind || Buffer.compare(got.id, expected.id) !== 0) {
    // A readable header naming another object: someone moved or swapped it.
    throw new CofferError('corrupt', 'object holds a different object than its name says (swapped or moved)');
  }
}

function openSegment(key: Buffer, counter: number, final: boolean, sealed: Uint8Array): Buffer {
  if (sealed.length < TAG_BYTES) throw new DecryptionError();
  const d = createDecipheriv('aes-256-gcm', key, nonce(counter, final));
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const plain = d.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    d.final();
  } catch {
    throw new DecryptionError();
  }
  return plain;
}

/**
 * Opens a whole sealed object held in memory.
 * @throws CofferError ('corrupt' | 'unsupported-version') for a bad header or a header
 *   naming another object; DecryptionError when any segment fails authentication or
 *   the length is one no sealer produces (truncated or extended).
 */
export function openObject(master: Uint8Array, expected: ObjectHeader, sealed: Uint8Array): Buffer {
  const header = decodeHeader(sealed);
  checkExpected(header, expected);
  let plainLen: number;
  try {
    plainLen = plainLength(sealed.length);
  } catch {
    // No sealer makes this length: a truncated or extended payload (spec §5.3). The same
    // bytes through ObjectOpener fail authentication, so both report DecryptionError.
    throw new DecryptionError();
  }
  const key = objectKey(master, sealed.subarray(0, HEADER_BYTES));
  const out = Buffer.allocUnsafe(plainLen);
  const full = SEGMENT_BYTES + TAG_BYTES;
  let pos = HEADER_BYTES;
  let written = 0;
  for (let i = 0; pos < sealed.length; i++) {
    const end = Math.min(pos + full, sealed.length);
    const final = end === sealed.length;
    const plain = openSegment(key, i, final, sealed.subarray(pos, end));
    plain.copy(out, written);
    written += plain.length;
    pos = end;
  }
  return out;
}

/**
 * Where the segments covering plaintext bytes [offset, offset + length) live inside a
 * sealed object of `sealedLen` bytes, for ranged reads of single chunks from a pack.
 */
export interface SegmentRange {
  firstSegment: number;
  /** Byte offset of the first covering segment inside the sealed object. */
  sealedOffset: number;
  sealedLength: number;
  /** Offset of the wanted bytes inside the decrypted covering segments. */
  skip: number;
  finalIncluded: boolean;
}

export function segmentRange(sealedLen: number, offset: number, length: number): SegmentRange {
  const plainLen = plainLength(sealedLen);
  if (offset < 0 || length < 0 || offset + length > plainLen) {
    throw new CofferError('corrupt', `range ${offset}+${length} lies outside the object (${plainLen} bytes)`);
  }
  const full = SEGMENT_BYTES + TAG_BYTES;
  const first = Math.floor(offset / SEGMENT_BYTES);
  const lastByte = Math.max(offset, offset + length - 1);
  const last = Math.floor(lastByte / SEGMENT_BYTES);
  const sealedOffset = HEADER_BYTES + first * full;
  const sealedEnd = Math.min(HEADER_BYTES + (last + 1) * full, sealedLen);
  return {
    firstSegment: first,
    sealedOffset,
    sealedLength: sealedEnd - sealedOffset,
    skip: offset - first * SEGMENT_BYTES,
    finalIncluded: sealedEnd === sealedLen,
  };
}

/**
 * Decrypts the segments fetched for `range` (see `segmentRange`) and returns exactly
 * the `length` plaintext bytes asked for. The header must be the object's own header,
 * read and checked with `decodeHeader`.
 */
export function openRange(
  master: Uint8Array,
  header: Uint8Array,
  range: SegmentRange,
  segments: Uint8Array,
  length: number,
): Buffer {
  if (segments.length !== range.sealedLength) throw new CofferError('corrupt', 'ranged read returned the wrong size');
  const key = objectKey(master, header.subarray(0, HEADER_BYTES));
  const full = SEGMENT_BYTES + TAG_BYTES;
  const parts: Buffer[] = [];
  for (let pos = 0, i = range.firstSegment; pos < segments.length; i++) {
    const end = Math.min(pos + full, segments.length);
    const final = range.finalIncluded && end === segments.length;
    parts.push(openSegment(key, i, final, segments.subarray(pos, end)));
    pos = end;
  }
  const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  return all.subarray(range.skip, range.skip + length);
}

/**
 * Opens single segments of one object, its key derived once: random access to a pack's
 * blobs, each segment decrypted once however many small blobs it holds (BlobReader).
 */
export class SegmentOpener {
  readonly #key: Buffer;

  /** `header`: the object's own header, read and checked with `decodeHeader`. */
  constructor(master: Uint8Array, header: Uint8Array) {
    this.#key = objectKey(master, header.subarray(0, HEADER_BYTES));
  }

  /**
   * Segment `index`'s plaintext (`sealed`: its bytes and tag); `final` when it is the
   * object's last segment.
   * @throws DecryptionError when it does not authenticate
   */
  open(index: number, final: boolean, sealed: Uint8Array): Buffer {
    return openSegment(this.#key, index, final, sealed);
  }
}

/**
 * Opens a sealed object arriving as a stream, releasing each segment's plaintext only
 * after its tag verified. Keeps one sealed segment buffered, because only the arrival
 * of one more byte tells whether a segment is the final one (spec §5.3). The buffer
 * has a fixed size, so small reads cost linear time.
 */
export class ObjectOpener {
  #key: Buffer | undefined;
  readonly #expected: ObjectHeader;
  readonly #master: Uint8Array;
  readonly #header = Buffer.alloc(HEADER_BYTES);
  #headerFill = 0;
  readonly #segment = Buffer.allocUnsafe(SEGMENT_BYTES + TAG_BYTES);
  #fill = 0;
  #counter = 0;
  #done = false;

  constructor(master: Uint8Array, expected: ObjectHeader) {
    this.#master = master;
    this.#expected = expected;
  }

  /**
   * Adds sealed bytes; returns the plaintext of every segment that is now known to be
   * non-final and has authenticated.
   * @throws CofferError for a bad header; DecryptionError when a segment fails.
   */
  update(data: Uint8Array): Buffer[] {
    if (this.#done) throw new Error('ObjectOpener: update after final');
    const out: Buffer[] = [];
    let off = 0;
    if (!this.#key) {
      const take = Math.min(HEADER_BYTES - this.#headerFill, data.length);
      this.#header.set(data.subarray(0, take), this.#headerFill);
      this.#headerFill += take;
      off = take;
      if (this.#headerFill < HEADER_BYTES) return out;
      checkExpected(decodeHeader(this.#header), this.#expected);
      this.#key = objectKey(this.#master, this.#header);
    }
    const full = SEGMENT_BYTES + TAG_BYTES;
    while (off < data.length) {
      // A full buffered segment followed by at least one more byte is not the final one.
      if (this.#fill === full) {
        out.push(openSegment(this.#key, this.#counter++, false, this.#segment));
        this.#fill = 0;
      }
      // Whole segments with more bytes after them are opened straight from the input.
      if (this.#fill === 0) {
        while (data.length - off > full) {
          out.push(openSegment(this.#key, this.#counter++, false, data.subarray(off, off + full)));
          off += full;
        }
      }
      const take = Math.min(full - this.#fill, data.length - off);
      this.#segment.set(data.subarray(off, off + take), this.#fill);
      this.#fill += take;
      off += take;
    }
    return out;
  }

  /** Verifies the final segment; throws if the stream ended early. */
  final(): Buffer[] {
    if (this.#done) throw new Error('ObjectOpener: final called twice');
    this.#done = true;
    if (!this.#key) throw new CofferError('corrupt', 'object is shorter than its header');
    // A final segment is non-empty unless it is the only one (spec §5.3).
    if (this.#fill < TAG_BYTES || (this.#counter > 0 && this.#fill === TAG_BYTES)) throw new DecryptionError();
    return [openSegment(this.#key, this.#counter++, true, this.#segment.subarray(0, this.#fill))];
  }
}
