/**
 * A small streaming zip writer for `coffer dump --archive zip` (restic's): APPNOTE 6.3
 * entries written as they come, file data deflated (level 1: a dump is often media that
 * does not shrink, and must not take minutes) with its CRC-32 and sizes in a data
 * descriptor after it, then the central directory. Zip64 fields where a size or offset
 * does not fit 32 bits or there are more than 65,535 entries. Unix modes in the external
 * attributes (made by: Unix), symlinks as their target with S_IFLNK (as Info-ZIP), the
 * modification time in the extended-timestamp field (UTC seconds) and in DOS form, owner
 * IDs in the Info-ZIP Unix field (0x7875). Names that are UTF-8 carry the language
 * encoding flag (bit 11); others are written as their bytes.
 *
 * The central directory holds one record per entry until the end (~100 bytes each plus
 * the name): memory grows with the number of entries, as it must for any zip.
 */
import * as zlib from 'node:zlib';
import { isUtf8 } from './tree.js';

const LOCAL = 0x04034b50;
const CENTRAL = 0x02014b50;
const DESCRIPTOR = 0x08074b50;
const END = 0x06054b50;
const END64 = 0x06064b50;
const LOCATOR64 = 0x07064b50;
const MAX32 = 0xffffffff;
const MAX16 = 0xffff;
const FLAG_DESCRIPTOR = 1 << 3;
const FLAG_UTF8 = 1 << 11;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
/** Files up to this size are deflated in one call (their bytes held together); larger ones stream. */
const WHOLE_FROM = 1024 * 1024;

/** CRC-32 (ISO-HDLC) of `b` continuing from `crc`: zlib.crc32 (Node ≥ 20.15), else a table. */
export const crc32: (b: Uint8Array, crc?: number) => number =
  typeof (zlib as { crc32?: unknown }).crc32 === 'function'
    ? (b, crc = 0) => (zlib as unknown as { crc32: (d: Uint8Array, v: number) => number }).crc32(b, crc)
    : (() => {
        const table = new Uint32Array(256).map((_, n) => {
          let c = n;
          for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
          return c >>> 0;
        });
        return (b: Uint8Array, crc = 0) => {
          let c = ~crc >>> 0;
          for (const x of b) c = table[(c ^ x) & 0xff]! ^ (c >>> 8);
          return ~c >>> 0;
        };
      })();

export interface ZipEntry {
  name: Buffer;
  kind: 'file' | 'dir' | 'symlink';
  mode: number;
  mtimeNs: bigint;
  uid?: number;
  gid?: number;
  /** A file's size (its data follows through `fileData`). */
  size?: number;
  /** A symlink's target (its content). */
  target?: Buffer;
}

interface CentralRecord {
  name: Buffer;
  flags: number;
  method: number;
  dos: number;
  crc: number;
  compressed: number;
  size: number;
  offset: number;
  external: number;
  zip64: boolean;
  mtime: number;
  uid?: number;
  gid?: number;
}

export class ZipWriter {
  readonly #records: CentralRecord[] = [];
  #offset = 0;

  /**
   * @param write appends bytes to the archive (awaited: back-pressure)
   * @param zip64From entries of this size or more get zip64 sizes (tests lower it; deflate
   *   can grow incompressible data by a little, so a margin below 4 GiB)
   */
  constructor(
    private readonly write: (b: Buffer) => Promise<void>,
    private readonly zip64From = 0xf0000000,
  ) {}

  async #out(b: Buffer): Promise<void> {
    this.#offset += b.length;
    await this.write(b);
  }

  /** A directory or symlink entry (its content, if any, is known). */
  async entry(e: ZipEntry): Promise<void> {
    const name = e.kind === 'dir' ? Buffer.concat([e.name, Buffer.from('/')]) : e.name;
    const content = e.kind === 'symlink' ? (e.target ?? Buffer.alloc(0)) : Buffer.alloc(0);
    const rec = this.#record(e, name, 0, false);
    rec.crc = crc32(content);
    rec.compressed = rec.size = content.length;
    await this.#out(this.#local(rec, false));
    if (content.length > 0) await this.#out(content);
    this.#records.push(rec);
  }

  /**
   * A file entry: `produce` hands its bytes, in order, to the function it is given; they
   * are deflated and counted. Its size must be `e.size` (checked).
   */
  async file(e: ZipEntry, produce: (sink: (b: Buffer) => Promise<void>) => Promise<void>): Promise<void> {
    const size = e.size ?? 0;
    const zip64 = size >= this.zip64From || this.#offset >= this.zip64From;
    const rec = this.#record(e, e.name, 8, zip64);
    rec.flags |= FLAG_DESCRIPTOR;
    await this.#out(this.#local(rec, true));
    let crc = 0;
    let seen = 0;
    let compressed = 0;
    if (size <= WHOLE_FROM) {
      // A small file in one deflate call: a stream per file (a zlib context, an async
      // iterator) cost most of the time of a zip of the 50,000-file tree.
      const parts: Buffer[] = [];
      await produce(async (b) => {
        crc = crc32(b, crc);
        seen += b.length;
        parts.push(b);
      });
      if (seen === size) {
        const z = zlib.deflateRawSync(parts.length === 1 ? parts[0]! : Buffer.concat(parts), { level: 1 });
        compressed = z.length;
        await this.#out(z);
      }
    } else {
      compressed = await this.#deflateStream(produce, (b) => {
        crc = crc32(b, crc);
        seen += b.length;
      });
    }
    if (seen !== size) throw new Error(`zip: ${e.name.toString('utf8')}: ${seen} bytes given for a size of ${size}`);
    rec.crc = crc;
    rec.compressed = compressed;
    rec.size = size;
    const d = Buffer.alloc(zip64 ? 24 : 16);
    d.writeUInt32LE(DESCRIPTOR, 0);
    d.writeUInt32LE(crc, 4);
    if (zip64) {
      d.writeBigUInt64LE(BigInt(compressed), 8);
      d.writeBigUInt64LE(BigInt(size), 16);
    } else {
      d.writeUInt32LE(compressed, 8);
      d.writeUInt32LE(size, 12);
    }
    await this.#out(d);
    this.#records.push(rec);
  }

  /**
   * A large file's bytes through one deflate stream, written as they come out; `seen`
   * is told of each input piece. Returns the compressed length.
   */
  async #deflateStream(produce: (sink: (b: Buffer) => Promise<void>) => Promise<void>, seen: (b: Buffer) => void): Promise<number> {
    const deflate = zlib.createDeflateRaw({ level: 1 });
    let compressed = 0;
    const drained = (async () => {
      for await (const c of deflate as AsyncIterable<Buffer>) {
        compressed += c.length;
        await this.#out(c);
      }
    })();
    try {
      await produce(async (b) => {
        seen(b);
        if (!deflate.write(b)) await new Promise<void>((resolve, reject) => {
          const done = (err?: Error) => {
            deflate.off('drain', done);
            deflate.off('error', done);
            if (err) reject(err);
            else resolve();
          };
          deflate.once('drain', done);
          deflate.once('error', done);
        });
      });
      deflate.end();
      await drained;
    } catch (err) {
      deflate.destroy(err as Error);
      await drained.catch(() => {});
      throw err;
    }
    return compressed;
  }

  /** The central directory and its end records. */
  async finish(): Promise<void> {
    const start = this.#offset;
    for (const r of this.#records) await this.#out(this.#central(r));
    const dirSize = this.#offset - start;
    const zip64 = this.#records.length >= MAX16 || start >= MAX32 || dirSize >= MAX32 || this.#records.some((r) => r.zip64);
    if (zip64) {
      const end64At = this.#offset;
      const e = Buffer.alloc(56);
      e.writeUInt32LE(END64, 0);
      e.writeBigUInt64LE(44n, 4);
      e.writeUInt16LE(0x0300 | 45, 12);
      e.writeUInt16LE(45, 14);
      e.writeBigUInt64LE(BigInt(this.#records.length), 24);
      e.writeBigUInt64LE(BigInt(this.#records.length), 32);
      e.writeBigUInt64LE(BigInt(dirSize), 40);
      e.writeBigUInt64LE(BigInt(start), 48);
      const l = Buffer.alloc(20);
      l.writeUInt32LE(LOCATOR64, 0);
      l.writeBigUInt64LE(BigInt(end64At), 8);
      l.writeUInt32LE(1, 16);
      await this.#out(Buffer.concat([e, l]));
    }
    const end = Buffer.alloc(22);
    end.writeUInt32LE(END, 0);
    end.writeUInt16LE(Math.min(this.#records.length, MAX16), 8);
    end.writeUInt16LE(Math.min(this.#records.length, MAX16), 10);
    end.writeUInt32LE(Math.min(dirSize, MAX32), 12);
    end.writeUInt32LE(Math.min(start, MAX32), 16);
    await this.#out(end);
  }

  #record(e: ZipEntry, name: Buffer, method: number, zip64: boolean): CentralRecord {
    const type = e.kind === 'dir' ? S_IFDIR : e.kind === 'symlink' ? S_IFLNK : S_IFREG;
    const mtime = Number(e.mtimeNs / 1_000_000_000n);
    return {
      name,
      flags: isUtf8(name) && !isAscii(name) ? FLAG_UTF8 : 0,
      method,
      dos: dosTime(mtime),
      crc: 0,
      compressed: 0,
      size: 0,
      offset: this.#offset,
      external: (((type | (e.mode & 0o7777)) << 16) | (e.kind === 'dir' ? 0x10 : 0)) >>> 0,
      zip64: zip64 || this.#offset >= MAX32,
      mtime,
      ...(e.uid !== undefined ? { uid: e.uid } : {}),
      ...(e.gid !== undefined ? { gid: e.gid } : {}),
    };
  }

  #extras(r: CentralRecord, local: boolean, zip64Fields: bigint[]): Buffer {
    const parts: Buffer[] = [];
    if (zip64Fields.length > 0) {
      const z = Buffer.alloc(4 + 8 * zip64Fields.length);
      z.writeUInt16LE(0x0001, 0);
      z.writeUInt16LE(8 * zip64Fields.length, 2);
      zip64Fields.forEach((v, i) => z.writeBigUInt64LE(v, 4 + 8 * i));
      parts.push(z);
    }
    // Extended timestamp: modification time, UTC seconds (signed 32 bits).
    if (r.mtime >= -(2 ** 31) && r.mtime < 2 ** 31) {
      const t = Buffer.alloc(9);
      t.writeUInt16LE(0x5455, 0);
      t.writeUInt16LE(5, 2);
      t.writeUInt8(1, 4);
      t.writeInt32LE(r.mtime, 5);
      parts.push(t);
    }
    if (r.uid !== undefined && r.gid !== undefined && r.uid <= MAX32 && r.gid <= MAX32 && local) {
      const u = Buffer.alloc(15);
      u.writeUInt16LE(0x7875, 0);
      u.writeUInt16LE(11, 2);
      u.writeUInt8(1, 4);
      u.writeUInt8(4, 5);
      u.writeUInt32LE(r.uid, 6);
      u.writeUInt8(4, 10);
      u.writeUInt32LE(r.gid, 11);
      parts.push(u);
    }
    return Buffer.concat(parts);
  }

  #local(r: CentralRecord, descriptor: boolean): Buffer {
    const extra = this.#extras(r, true, r.zip64 ? [descriptor ? 0n : BigInt(r.size), descriptor ? 0n : BigInt(r.compressed)] : []);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(LOCAL, 0);
    h.writeUInt16LE(r.zip64 ? 45 : 20, 4);
    h.writeUInt16LE(r.flags, 6);
    h.writeUInt16LE(r.method, 8);
    h.writeUInt32LE(r.dos, 10);
    h.writeUInt32LE(descriptor ? 0 : r.crc, 14);
    h.writeUInt32LE(r.zip64 ? MAX32 : descriptor ? 0 : r.compressed, 18);
    h.writeUInt32LE(r.zip64 ? MAX32 : descriptor ? 0 : r.size, 22);
    h.writeUInt16LE(r.name.length, 26);
    h.writeUInt16LE(extra.length, 28);
    return Buffer.concat([h, r.name, extra]);
  }

  #central(r: CentralRecord): Buffer {
    const big = r.zip64 || r.size >= MAX32 || r.compressed >= MAX32 || r.offset >= MAX32;
    const extra = this.#extras(r, false, big ? [BigInt(r.size), BigInt(r.compressed), BigInt(r.offset)] : []);
    const h = Buffer.alloc(46);
    h.writeUInt32LE(CENTRAL, 0);
    h.writeUInt16LE(0x0300 | (big ? 45 : 20), 4);
    h.writeUInt16LE(big ? 45 : 20, 6);
    h.writeUInt16LE(r.flags, 8);
    h.writeUInt16LE(r.method, 10);
    h.writeUInt32LE(r.dos, 12);
    h.writeUInt32LE(r.crc, 16);
    h.writeUInt32LE(big ? MAX32 : r.compressed, 20);
    h.writeUInt32LE(big ? MAX32 : r.size, 24);
    h.writeUInt16LE(r.name.length, 28);
    h.writeUInt16LE(extra.length, 30);
    h.writeUInt32LE(r.external, 38);
    h.writeUInt32LE(big ? MAX32 : r.offset, 42);
    return Buffer.concat([h, r.name, extra]);
  }
}

/** MS-DOS date and time (local fields read as UTC; 1980–2107, clamped). */
function dosTime(sec: number): number {
  const d = new Date(Math.min(Math.max(sec, 315532800), 4354819198) * 1000);
  const time = (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1);
  const date = ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate();
  return ((date << 16) | time) >>> 0;
}

function isAscii(b: Buffer): boolean {
  for (const x of b) if (x >= 0x80) return false;
  return true;
}
