/**
 * Worker thread: reads one file at a time, cuts it with FastCDC and computes each
 * chunk's keyed ID, so both cores chunk and hash while the main thread compresses,
 * seals and stores. Chunks travel to the main thread in transferred ArrayBuffers that
 * come back when consumed. Flow control: at most CREDITS chunks per worker are out, so
 * memory stays bounded however fast the disk is.
 */
import { createHmac } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { FastCdc, type ChunkerParams } from './fastcdc.js';

export const CREDITS = 4;
const READ_WINDOW = 4 * 1024 * 1024;

export interface WorkerSetup {
  gearTable: Uint8Array;
  chunkIdKey: Uint8Array;
  params: ChunkerParams;
}
/** `path` is bytes when the file name is not UTF-8 (a Buffer arrives as a Uint8Array). */
export type ToWorker = { type: 'file'; job: number; path: string | Uint8Array; start: number; end: number } | { type: 'ack'; buffer: ArrayBuffer };
export type FromWorker =
  | { type: 'chunk'; job: number; id: Uint8Array; data: ArrayBuffer; length: number }
  | { type: 'done'; job: number; size: number }
  | { type: 'error'; job: number; code: string; message: string };

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
  const queue: Array<{ job: number; path: string | Uint8Array; start: number; end: number }> = [];
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

  const pump = async () => {
    if (busy) return;
    busy = true;
    while (queue.length > 0) {
      const { job, path, start, end } = queue.shift()!;
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
      queue.push({ job: m.job, path: m.path, start: m.start, end: m.end });
      void pump();
    }
  });
}
