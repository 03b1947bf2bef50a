/**
 * Worker thread: reads one file at a time, cuts it with FastCDC and computes each
 * chunk's keyed ID, so both cores chunk and hash while the main thread compresses,
 * seals and stores. Chunks travel to the main thread in transferred ArrayBuffers that
 * come back when consumed. Flow control: at most CREDITS chunks per worker are out, so
 * memory stays bounded however fast the disk is.
 *
 * Small files (one chunk each, see SmallFileBatch) come in batches of many files per
 * message: each is read with plain synchronous calls (a worker has nothing else to do
 * meanwhile), hashed and compressed here, and the whole batch goes back in one message
 * with one transferred buffer, so a small file costs no thread round trip of its own.
 */
import { createHmac } from 'node:crypto';
import { closeSync, constants as fsConstants, promises as fs, lstatSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { maybeCompress, type CompressionMode } from '../repository/compress.js';
import { readXattrsSync } from '../repository/fs-meta.js';
import { isUtf8 } from '../repository/tree.js';
import { FastCdc, type ChunkerParams } from './fastcdc.js';

export const CREDITS = 4;
const READ_WINDOW = 4 * 1024 * 1024;

export interface WorkerSetup {
  gearTable: Uint8Array;
  chunkIdKey: Uint8Array;
  params: ChunkerParams;
  /** How small files' blobs are compressed (`--compression`, or the repository's default). */
  compression: CompressionMode;
}

/**
 * One small file's outcome in a batch. `size` is what was read: a file that grew past
 * its expected size reads as expected + 1 (the caller reads it again the ordinary way).
 * The stored bytes are `data[offset, offset + length)` of the batch's buffer.
 */
export type SmallFileResult =
  | {
      ok: true;
      size: number;
      flags: number;
      offset: number;
      length: number;
      /** The file's lstat just after it was read (null: gone, or no longer a regular file). */
      after: SmallFileStat | null;
      /** Its extended attributes (read after the contents; absent when not asked for). */
      xattrs?: Array<{ name: string; value: Uint8Array }>;
      /** Why its xattrs could not be read (the contents were). */
      xattrError?: { code?: string; message: string };
    }
  | { ok: false; code: string; message: string };

/** The fields of a file's stat that show whether it changed while it was read. */
export interface SmallFileStat {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

/** `path` is bytes when the file name is not UTF-8 (a Buffer arrives as a Uint8Array). */
export type ToWorker =
  | { type: 'file'; job: number; path: string | Uint8Array; start: number; end: number }
  /** `xattrs`: also read each file's extended attributes (paths given as strings only). */
  /** `paths`: each path's bytes followed by a NUL; `sizes`: each file's expected size. */
  | { type: 'batch'; job: number; paths: Uint8Array; sizes: Float64Array; xattrs: boolean }
  | { type: 'ack'; buffer: ArrayBuffer };
export type FromWorker =
  | { type: 'chunk'; job: number; id: Uint8Array; data: ArrayBuffer; length: number }
  | { type: 'done'; job: number; size: number }
  | { type: 'error'; job: number; code: string; message: string }
  /** `ids`: 32 bytes per file, in order (zeros for a file that failed). */
  | { type: 'batch'; job: number; results: SmallFileResult[]; ids: ArrayBuffer; data: ArrayBuffer };

if (parentPort) {
  const port = parentPort;
  const setup = workerData as WorkerSetup;
  const cdc = new FastCdc(setup.gearTable, setup.params);
  // CREDITS chunk buffers travel to the main thread and come back with the ack, so the
  // same few buffers carry every chunk: no allocation per chunk, nothing for the
  // allocator to strand between threads.
  const free: ArrayBuffer[] = [];
  let allocated = 0;
  let creditWaiter: (() => void) | undefined;
  type Queued = { type: 'file'; job: number; path: string | Uint8Array; start: number; end: number } | { type: 'batch'; job: number; paths: Uint8Array; sizes: Float64Array; xattrs: boolean };
  const queue: Queued[] = [];
  let busy = false;

  const takeBuffer = async (): Promise<ArrayBuffer> => {
    if (free.length === 0 && allocated < CREDITS) {
      allocated++;
      return new ArrayBuffer(cdc.maxSize);
    }
    while (free.length === 0) await new Promise<void>((r) => (creditWaiter = r));
    return free.pop()!;
  };

  /** Chunks bytes [start, end) of a file (end = Infinity: to its end). */
  const chunkFile = async (job: number, path: string | Uint8Array, start0: number, end0: number) => {
    // O_NOFOLLOW: a file replaced by a symlink since the walk saw it is not followed.
    const fh = await fs.open(path as string, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    let size = 0;
    let pos = start0;
    try {
      const buf = Buffer.allocUnsafe(READ_WINDOW);
      let start = 0;
      let end = 0;
      let eof = false;
      for (;;) {
        if (!eof && end - start < cdc.maxSize) {
          if (start > 0) {
            buf.copy(buf, 0, start, end);
            end -= start;
            start = 0;
          }
          const want = Math.min(buf.length - end, end0 - pos);
          const { bytesRead } = want > 0 ? await fh.read(buf, end, want, pos) : { bytesRead: 0 };
          if (bytesRead === 0) eof = true;
          end += bytesRead;
          size += bytesRead;
          pos += bytesRead;
          continue;
        }
        const n = cdc.cut(buf, start, end, eof);
        if (n === -1) continue;
        if (n === 0) break;
        const chunk = buf.subarray(start, start + n);
        const id = createHmac('sha256', setup.chunkIdKey).update(chunk).digest();
        const data = await takeBuffer();
        new Uint8Array(data).set(chunk);
        start += n;
        const msg: FromWorker = { type: 'chunk', job, id, data, length: n };
        port.postMessage(msg, [data]);
      }
    } finally {
      await fh.close();
    }
    return size;
  };

  /** Reads up to `size` + 1 bytes (one more shows the file grew); O_NOFOLLOW as above. */
  const readSmall = (path: Buffer, size: number): Buffer => {
    const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const buf = Buffer.allocUnsafe(size + 1);
      let got = 0;
      while (got < buf.length) {
        const n = readSync(fd, buf, got, buf.length - got, null);
        if (n === 0) break;
        got += n;
      }
      return buf.subarray(0, got);
    } finally {
      closeSync(fd);
    }
  };

  /** lstat after the read, on this thread: the main thread then needs no second stat per file. */
  const statAfter = (path: Buffer): SmallFileStat | null => {
    try {
      const st = lstatSync(path, { bigint: true });
      return st.isFile() ? { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino } : null;
    } catch {
      return null;
    }
  };

  const chunkBatch = async (job: number, joined: Uint8Array, sizes: Float64Array, withXattrs: boolean) => {
    const all = Buffer.from(joined.buffer, joined.byteOffset, joined.byteLength);
    const paths: Buffer[] = [];
    for (let o = 0; o < all.length; ) {
      const end = all.indexOf(0, o);
      paths.push(all.subarray(o, end));
      o = end + 1;
    }
    const ids = new Uint8Array(32 * paths.length);
    const raws: Array<Buffer | null> = [];
    const results: SmallFileResult[] = [];
    for (let i = 0; i < paths.length; i++) {
      try {
        const path = paths[i]!;
        const raw = readSmall(path, sizes[i]!);
        const after = statAfter(path);
        ids.set(createHmac('sha256', setup.chunkIdKey).update(raw).digest(), 32 * i);
        raws.push(raw);
        const r: SmallFileResult = { ok: true, size: raw.length, flags: 0, offset: 0, length: 0, after };
        // The xattr binding takes text paths: names that are not UTF-8 are left to the caller.
        if (withXattrs && isUtf8(path)) {
          try {
            const x = readXattrsSync(path.toString('utf8'));
            if (x.length > 0) r.xattrs = x;
          } catch (e) {
            const err = e as NodeJS.ErrnoException;
            r.xattrError = { ...(err.code !== undefined ? { code: err.code } : {}), message: String(err.message ?? err) };
          }
        }
        results.push(r);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        raws.push(null);
        results.push({ ok: false, code: err.code ?? 'EUNKNOWN', message: err.message });
      }
    }
    // Compressed side by side on libuv's pool; one buffer carries the whole batch back.
    const stored = await Promise.all(raws.map((r) => (r && setup.compression !== 'off' ? maybeCompress(r, setup.compression) : { stored: r, flags: 0 })));
    const total = stored.reduce((a, s) => a + (s.stored?.length ?? 0), 0);
    const data = new Uint8Array(total);
    let o = 0;
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      const s = stored[i]!;
      if (!r.ok || !s.stored) continue;
      data.set(s.stored, o);
      r.flags = s.flags;
      r.offset = o;
      r.length = s.stored.length;
      o += s.stored.length;
    }
    port.postMessage({ type: 'batch', job, results, ids: ids.buffer, data: data.buffer } satisfies FromWorker, [ids.buffer, data.buffer]);
  };

  const pump = async () => {
    if (busy) return;
    busy = true;
    while (queue.length > 0) {
      const q = queue.shift()!;
      if (q.type === 'batch') {
        try {
          await chunkBatch(q.job, q.paths, q.sizes, q.xattrs);
        } catch (e) {
          const err = e as NodeJS.ErrnoException;
          port.postMessage({ type: 'error', job: q.job, code: err.code ?? 'EUNKNOWN', message: err.message } satisfies FromWorker);
        }
        continue;
      }
      const { job, path, start, end } = q;
      try {
        const size = await chunkFile(job, path, start, end);
        port.postMessage({ type: 'done', job, size } satisfies FromWorker);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        port.postMessage({ type: 'error', job, code: err.code ?? 'EUNKNOWN', message: err.message } satisfies FromWorker);
      }
    }
    busy = false;
  };

  port.on('message', (m: ToWorker) => {
    if (m.type === 'ack') {
      free.push(m.buffer);
      const w = creditWaiter;
      creditWaiter = undefined;
      w?.();
    } else {
      queue.push(m);
      void pump();
    }
  });
}
