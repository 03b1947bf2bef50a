/**
 * Byte helpers for the wire codecs: a bounds-checked reader and a growable writer.
 * All integers are big-endian (network order), as in RFC 9180 and RFC 9807.
 */
import { DecodeError } from './errors.js';

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/** Whether every character of `s` is ASCII: its UTF-8 bytes are then its char codes, one each. */
export function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

export function fromUtf8(bytes: Uint8Array, field: string): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    throw new DecodeError(`${field}: not valid UTF-8`, 'bad-field');
  }
}

export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Constant-time for equal lengths; lengths are public in every use here. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** RFC 9180 §4 I2OSP. */
export function i2osp(value: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let v = value;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = v & 0xff;
    v = Math.floor(v / 256);
  }
  return out;
}

const HEX_DIGITS = [48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102]; // 0-9 a-f
/** Characters per String.fromCharCode call (below every engine's argument limit). */
const HEX_PIECE = 8192;

/**
 * Lowercase hex, two digits a byte. The digits go into one array of character codes, made
 * a string in pieces: a string per byte (as before) made ~3 short-lived strings a byte,
 * ~1 KB of garbage for a 32-byte ID (issue 13, the vault's credential identifier).
 */
export function toHex(bytes: Uint8Array): string {
  const codes = new Uint16Array(bytes.length * 2);
  for (let i = 0; i < bytes.length; i++) {
    codes[2 * i] = HEX_DIGITS[bytes[i]! >> 4]!;
    codes[2 * i + 1] = HEX_DIGITS[bytes[i]! & 15]!;
  }
  let s = '';
  for (let i = 0; i < codes.length; i += HEX_PIECE) s += String.fromCharCode.apply(null, codes.subarray(i, i + HEX_PIECE) as unknown as number[]);
  return s;
}

export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || /[^0-9a-f]/i.test(hex)) throw new TypeError('fromHex: not an even-length hex string');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const B64URL = /^[A-Za-z0-9_-]*$/;
const B64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const B64URL_VALUE = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64URL_VALUE[B64URL_ALPHABET.charCodeAt(i)] = i;

/**
 * Node's Buffer when this runs in Node (a global there; this package imports no
 * `node:*`): its native base64url codec is ~5x cheaper than the loops below and builds
 * no intermediate strings. The vault converts every OPAQUE message and record field
 * to and from the library's base64url strings, several per request. Browsers use the
 * portable code; both give the same output (test/rfc4648-base64url.test.ts).
 */
interface NativeBase64 {
  from(buffer: ArrayBufferLike, byteOffset: number, length: number): { toString(encoding: 'base64url'): string; write(text: string, encoding: 'base64url'): number };
}
const nativeBuffer = (globalThis as { Buffer?: NativeBase64 }).Buffer;

/** base64url without padding (how @serenity-kit/opaque exchanges bytes); RFC 4648 §5. */
export function toBase64Url(bytes: Uint8Array): string {
  if (nativeBuffer) return nativeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
  return toBase64UrlPortable(bytes);
}

/** @throws DecodeError for anything but canonical-length unpadded base64url */
export function fromBase64Url(text: string, field = 'value'): Uint8Array {
  if (!nativeBuffer) return fromBase64UrlPortable(text, field);
  if (!B64URL.test(text) || text.length % 4 === 1) throw new DecodeError(`${field}: not base64url`, 'bad-field');
  // Decoded into an array of its own (not Buffer's shared pool: a value may be a secret).
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  if (nativeBuffer.from(out.buffer, out.byteOffset, out.byteLength).write(text, 'base64url') !== out.length) throw new DecodeError(`${field}: not base64url`, 'bad-field');
  return out;
}

/** `toBase64Url` without Node's Buffer (browsers; tests compare the two). */
export function toBase64UrlPortable(bytes: Uint8Array): string {
  const a = B64URL_ALPHABET;
  let s = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    s += a[n >>> 18]! + a[(n >>> 12) & 63]! + a[(n >>> 6) & 63]! + a[n & 63]!;
  }
  if (i + 1 === bytes.length) {
    const n = bytes[i]! << 16;
    s += a[n >>> 18]! + a[(n >>> 12) & 63]!;
  } else if (i + 2 === bytes.length) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    s += a[n >>> 18]! + a[(n >>> 12) & 63]! + a[(n >>> 6) & 63]!;
  }
  return s;
}

/** `fromBase64Url` without Node's Buffer (browsers; tests compare the two). */
export function fromBase64UrlPortable(text: string, field = 'value'): Uint8Array {
  if (!B64URL.test(text) || text.length % 4 === 1) throw new DecodeError(`${field}: not base64url`, 'bad-field');
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let o = 0;
  let i = 0;
  const v = (k: number): number => B64URL_VALUE[text.charCodeAt(k)]!;
  for (; i + 3 < text.length; i += 4) {
    const n = (v(i) << 18) | (v(i + 1) << 12) | (v(i + 2) << 6) | v(i + 3);
    out[o++] = n >>> 16;
    out[o++] = (n >>> 8) & 0xff;
    out[o++] = n & 0xff;
  }
  const left = text.length - i;
  if (left === 2) {
    out[o] = ((v(i) << 18) | (v(i + 1) << 12)) >>> 16;
  } else if (left === 3) {
    const n = (v(i) << 18) | (v(i + 1) << 12) | (v(i + 2) << 6);
    out[o] = n >>> 16;
    out[o + 1] = (n >>> 8) & 0xff;
  }
  return out;
}

/** Sequential writer; `finish()` returns exactly the bytes written. */
export class ByteWriter {
  #buf: Uint8Array;
  #len = 0;

  /** @param capacity the expected length (it grows past it when needed) */
  constructor(capacity = 256) {
    this.#buf = new Uint8Array(Math.max(16, capacity));
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
  }
  u8(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`u8 out of range: ${v}`);
    this.#reserve(1);
    this.#buf[this.#len++] = v;
    return this;
  }
  // Integers are written in place (no I2OSP array per field: the record and message
  // codecs write dozens per request).
  u16(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`u16 out of range: ${v}`);
    this.#reserve(2);
    this.#buf[this.#len++] = v >>> 8;
    this.#buf[this.#len++] = v & 0xff;
    return this;
  }
  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`u32 out of range: ${v}`);
    this.#reserve(4);
    this.#u32(v);
    return this;
  }
  /** Unsigned 64-bit; only safe integers (timestamps in ms) are used. */
  u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`u64 out of range: ${v}`);
    this.#reserve(8);
    this.#u32(Math.floor(v / 0x100000000));
    this.#u32(v % 0x100000000);
    return this;
  }
  #u32(v: number): void {
    const b = this.#buf;
    b[this.#len++] = v >>> 24;
    b[this.#len++] = (v >>> 16) & 0xff;
    b[this.#len++] = (v >>> 8) & 0xff;
    b[this.#len++] = v & 0xff;
  }
  bytes(b: Uint8Array): this {
    this.#reserve(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }
  /** u16 length prefix, then the bytes. */
  vec16(b: Uint8Array): this {
    return this.u16(b.length).bytes(b);
  }
  get length(): number {
    return this.#len;
  }
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
  /**
   * The bytes written followed by zeros, `size` bytes in all: the writer's own buffer when
   * it was made with exactly that capacity and never grew (no copy). Use the writer no more.
   * @throws RangeError when more than `size` bytes were written
   */
  finishPadded(size: number): Uint8Array {
    if (this.#len > size) throw new RangeError(`ByteWriter: ${this.#len} bytes written, more than ${size}`);
    if (this.#buf.length === size) return this.#buf;
    const out = new Uint8Array(size);
    out.set(this.#buf.subarray(0, this.#len));
    return out;
  }
}

/**
 * `u16 length || what write() writes || zeros`, `size` bytes in all, written into one
 * array (no copy): the padded layout of request/response bodies and vault records.
 * @throws RangeError naming `what` when the content exceeds `size - 2` bytes
 */
export function writePadded(size: number, what: string, write: (w: ByteWriter) => unknown): Uint8Array {
  const w = new ByteWriter(size).u16(0);
  write(w);
  const length = w.length - 2;
  if (length > size - 2) throw new RangeError(`${what}: ${length} bytes exceeds ${size - 2}`);
  const out = w.finishPadded(size);
  out[0] = length >> 8;
  out[1] = length & 0xff;
  return out;
}

/** Sequential reader: every read is bounds-checked and throws DecodeError naming the field. */
export class ByteReader {
  #at = 0;
  constructor(private readonly buf: Uint8Array) {}

  #take(n: number, field: string): Uint8Array {
    if (this.#at + n > this.buf.length) throw new DecodeError(`${field}: truncated`, 'bad-length');
    const out = this.buf.subarray(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }
  // Integers are read in place (no subarray view per field).
  #skip(n: number, field: string): number {
    const at = this.#at;
    if (at + n > this.buf.length) throw new DecodeError(`${field}: truncated`, 'bad-length');
    this.#at = at + n;
    return at;
  }
  u8(field: string): number {
    return this.buf[this.#skip(1, field)]!;
  }
  u16(field: string): number {
    const at = this.#skip(2, field);
    return (this.buf[at]! << 8) | this.buf[at + 1]!;
  }
  u32(field: string): number {
    const at = this.#skip(4, field);
    const b = this.buf;
    return ((b[at]! << 24) >>> 0) + (b[at + 1]! << 16) + (b[at + 2]! << 8) + b[at + 3]!;
  }
  u64(field: string): number {
    const hi = this.u32(field);
    const lo = this.u32(field);
    if (hi > 0x1fffff) throw new DecodeError(`${field}: exceeds 2^53`, 'bad-field');
    return hi * 0x100000000 + lo;
  }
  /** A copy, so decoded values never alias the input buffer. */
  bytes(n: number, field: string): Uint8Array {
    return this.#take(n, field).slice();
  }
  vec16(field: string, max: number): Uint8Array {
    const n = this.u16(field);
    if (n > max) throw new DecodeError(`${field}: ${n} bytes exceeds ${max}`, 'bad-length');
    return this.bytes(n, field);
  }
  get remaining(): number {
    return this.buf.length - this.#at;
  }
  rest(): Uint8Array {
    return this.#take(this.remaining, 'rest').slice();
  }
  /** Every decoder ends with this: trailing bytes are an error, encodings are canonical. */
  end(what: string): void {
    if (this.remaining !== 0) throw new DecodeError(`${what}: ${this.remaining} trailing bytes`, 'trailing-bytes');
  }
}
