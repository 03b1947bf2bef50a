/**
 * Worker thread: reads one file at a time, cuts it with FastCDC and computes each
 * chunk's keyed ID, so both cores chunk and hash while the main thread seals and
 * stores. A new file's chunks are compressed here too; a changed file's are compressed
 * by the main thread, for the few that dedup does not find in the repository. Chunks
 * travel to the main thread in transferred ArrayBuffers that come back when consumed.
 * Flow control: at most CREDITS chunks per worker are out, so memory stays bounded
 * however fast the disk is.
 *
 * Small files (one chunk each, see SmallFileBatch) come in batches of many files per
 * message: each is read with plain synchronous calls (a worker has nothing else to do
 * meanwhile), hashed and compressed here, and the whole batch goes back in one message
 * with one transferred buffer, so a small file costs no thread round trip of its own.
 */
import { chunkIdKeyOf, chunkIdUnder, type ChunkIdKeySpec } from '../crypto/repository-keys.js';
// node:buffer's validator, as tree.ts's isUtf8 (that module, the listing's codec, is not loaded here).
import { isUtf8 } from 'node:buffer';
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { maybeCompressInto, zstdBound, type CompressionMode } from '../repository/compress.js';
import { readXattrsSync } from '../repository/fs-meta.js';
import { lowerThisThreadPriority } from '../repository/thread-priority.js';
import { FastCdc, type ChunkerParams } from './fastcdc.js';
import { allZero } from '../zeros.js';
import { SMALL_STATUS, SmallStatus, type SmallFileExtra } from './small-batch.js';

/**
 * How a source file is opened: O_NOFOLLOW (a file replaced by a symlink since the walk saw
 * it is not followed) and O_NONBLOCK (one replaced by a FIFO does not block the open; on
 * a regular file the flag changes nothing).
 */
const OPEN_SOURCE = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;

/** A source path that is no longer a regular file when it is opened (a FIFO, a device node, a directory put in its place). */
function notRegularFile(): NodeJS.ErrnoException {
  return Object.assign(new Error('not a regular file any more (replaced since the walk saw it)'), { code: 'ENOTREG' });
}

export const CREDITS = 4;
const READ_WINDOW = 4 * 1024 * 1024;
/** Batches of small files whose compression may still run while the next is read. */
const BATCHES_COMPRESSING = 2;
/** A batch read buffer is at least this large (so later batches fit) and kept for reuse up to this size. */
const BATCH_BUFFER_MIN = 512 * 1024;
const BATCH_BUFFER_MAX = 8 * 1024 * 1024;
/** Batch output buffers given back by the main thread and kept for the next batches (see dataBuffers). */
const DATA_BUFFERS_KEPT = 4;
/**
 * A new chunk's compression handed to the other worker while it is idle (see 'peer'): at
 * most this many at once; beyond them, this worker compresses its chunks itself.
 */
const PEER_IN_FLIGHT = 2;

export interface WorkerSetup {
  gearTable: Uint8Array;
  /** The chunk-ID key and its function (RepositoryKeys.chunkIdSpec). */
  chunkIdKey: ChunkIdKeySpec;
  params: ChunkerParams;
  /** How blobs compressed here are (`--compression`, or the repository's default): small files', and new files' chunks. */
  compression: CompressionMode;
  /** Tests only: overwrite each batch output buffer when it comes back (a use after its return shows). */
  poisonReturned?: boolean;
  /** Nice steps this thread takes below the process's priority (thread-priority.ts); 0: none. */
  niceDelta: number;
}


/** `path` is bytes when the file name is not UTF-8 (a Buffer arrives as a Uint8Array). */
export type ToWorker =
  /**
   * `compress`: compress each chunk here; without it every chunk goes raw. A chunk whose
   * ID is among `known` (32 bytes each: chunks the repository has, the file's chunks in
   * its parent snapshot) goes as its ID alone ('known'): its bytes are not copied out.
   * `knownLengths`: each of `known`'s raw length, when `known` is the parent's chunks of
   * this region in file order: then the next parent chunk is tried first (see chunkFile).
   */
  | { type: 'file'; job: number; path: string | Uint8Array; start: number; end: number; compress: boolean; known?: Uint8Array; knownLengths?: Uint32Array }
  /** `xattrs`: also read each file's extended attributes (paths given as strings only). */
  /** `paths`: each path's bytes followed by a NUL; `sizes`: each file's expected size. */
  | { type: 'batch'; job: number; paths: Uint8Array; sizes: Float64Array; xattrs: boolean }
  | { type: 'ack'; buffer: ArrayBuffer }
  /**
   * The other worker: a channel to it, and flags: two (one Int32 each, `self` is this
   * worker's) that say whether each is idle, then one the main thread sets once every job
   * has been given (ChunkPool.lastJobs). A worker chunking a file while the other is idle
   * after that sends it new chunks to compress (zstd is most of a changed database's chunk
   * work, issue 13); the idle one compresses them as it would its own (same binding, same
   * level: the same bytes) and sends them back; the chunks still go out in file order.
   */
  | { type: 'peer'; port: MessagePort; idle: Int32Array; self: number }
  /** A batch's `data` buffer, given back once the main thread no longer refers to it. */
  | { type: 'batch-data'; buffer: ArrayBuffer };
export type FromWorker =
  /** `data`'s first `length` bytes: the chunk, or with `compress` its stored form (`flags`, spec §7.1), of `rawLength` bytes raw. */
  | { type: 'chunk'; job: number; id: Uint8Array; data: ArrayBuffer; length: number; rawLength: number; flags: number | undefined; byPeer?: true }
  /** A chunk of the job's `known` (the repository has it): its ID and raw length, no bytes. */
  | { type: 'known'; job: number; id: Uint8Array; rawLength: number }
  /** `predicted`: chunks taken at their parent chunk's length without the cut (see chunkFile). */
  | { type: 'done'; job: number; size: number; predicted: number }
  | { type: 'error'; job: number; code: string; message: string }
  /**
   * `ids`: 32 bytes per file, in order (zeros for a file that failed); `data`: the stored
   * bytes in its first `length` bytes (it may be larger: a reused buffer); the rest: see SMALL_STATUS.
   */
  | { type: 'batch'; job: number; status: Int32Array; after: BigUint64Array; extras: SmallFileExtra[]; ids: ArrayBuffer; data: ArrayBuffer; length: number };

if (parentPort) {
  const port = parentPort;
  const setup = workerData as WorkerSetup;
  const cdc = new FastCdc(setup.gearTable, setup.params);
  // The chunk-ID key made ready once (see chunkIdUnder).
  const idKey = chunkIdKeyOf(setup.chunkIdKey);
  /**
   * The IDs of all-zero chunks by length: a chunk of zeros has the same ID wherever it
   * is, so a disk image's or a preallocated file's unused space (cut by FastCDC into
   * chunks of one length, fastcdc.ts) is hashed once per length, not per chunk.
   */
  const zeroIds = new Map<number, Buffer>();
  const chunkId = (chunk: Buffer): Buffer => {
    if (!allZero(chunk)) return chunkIdUnder(idKey, chunk);
    let id = zeroIds.get(chunk.length);
    if (!id) zeroIds.set(chunk.length, (id = chunkIdUnder(idKey, chunk)));
    return id;
  };
  // CREDITS chunk buffers travel to the main thread and come back with the ack, so the
  // same few buffers carry every chunk: no allocation per chunk, nothing for the
  // allocator to strand between threads.
  const free: ArrayBuffer[] = [];
  let allocated = 0;
  let creditWaiter: (() => void) | undefined;
  type Queued = Extract<ToWorker, { type: 'file' | 'batch' }>;
  const queue: Queued[] = [];
  let busy = false;
  // One read buffer per worker, reused for every file (files are chunked one at a time
  // here; each chunk is copied out before the next read): a buffer per file left 4 MiB of
  // garbage per file for the collector, 20-30 MiB per worker on media files (issue 13).
  let readBuffer: Buffer | undefined;
  /** zstd's output for a chunk compressed here (a file's `compress`), reused likewise. */
  let zstdScratch: Buffer | undefined;
  /**
   * Batch read buffers given back once the batch's compression is done (at most
   * BATCHES_COMPRESSING are in use), reused when large enough: no allocation per batch.
   */
  const batchBuffers: Buffer[] = [];
  /** Where a batch's stored bytes are put together before they go to a data buffer (see chunkBatch). */
  let staging: Buffer | undefined;
  /**
   * A new batch buffer's size: a quarter more than asked, so that the next batches, whose
   * sizes vary a little around the caller's batch size, fit it rather than each needing
   * one a few bytes larger.
   */
  const roomFor = (size: number) => Math.max(size + (size >> 2), BATCH_BUFFER_MIN);
  /**
   * Batch output buffers: each batch's stored bytes travel to the main thread in one
   * transferred buffer, which comes back ('batch-data') once its blobs are in packs, and
   * carries a later batch. A new buffer per batch was freed only at the main thread's next
   * full GC: tens of MiB of dead batches in peak RSS on the 50,000-file tree (issue 13).
   */
  const dataBuffers: ArrayBuffer[] = [];
  const takeDataBuffer = (size: number): ArrayBuffer => {
    let best = -1;
    for (let i = 0; i < dataBuffers.length; i++) if (dataBuffers[i]!.byteLength >= size && (best < 0 || dataBuffers[i]!.byteLength < dataBuffers[best]!.byteLength)) best = i;
    return best >= 0 ? dataBuffers.splice(best, 1)[0]! : new ArrayBuffer(roomFor(size));
  };
  const keepDataBuffer = (b: ArrayBuffer) => {
    if (setup.poisonReturned) new Uint8Array(b).fill(0xa5);
    if (b.byteLength > BATCH_BUFFER_MAX) return;
    if (dataBuffers.length < DATA_BUFFERS_KEPT) return void dataBuffers.push(b);
    // Full: keep the larger ones (more later batches fit).
    let small = 0;
    for (let i = 1; i < dataBuffers.length; i++) if (dataBuffers[i]!.byteLength < dataBuffers[small]!.byteLength) small = i;
    if (dataBuffers[small]!.byteLength < b.byteLength) dataBuffers[small] = b;
  };

  const takeBuffer = async (): Promise<ArrayBuffer> => {
    if (free.length === 0 && allocated < CREDITS) {
      allocated++;
      return new ArrayBuffer(cdc.maxSize);
    }
    while (free.length === 0) await new Promise<void>((r) => (creditWaiter = r));
    return free.pop()!;
  };

  // The other worker (see 'peer'): its channel, and the idle flags.
  let peer: MessagePort | undefined;
  let idleFlags: Int32Array | undefined;
  let self = 0;
  const setIdle = (idle: boolean) => {
    if (idleFlags) Atomics.store(idleFlags, self, idle ? 1 : 0);
  };
  /** Compressed for the other worker: the chunk's raw bytes in `buffer`, its stored form there when it comes back. */
  type PeerRequest = { seq: number; buffer: ArrayBuffer; length: number };
  type PeerReply = { seq: number; buffer: ArrayBuffer; length: number; flags: number };
  /** A large chunk's stored form, compressed with this thread's reused zstd context into its scratch buffer. */
  const compressChunk = (raw: Buffer) => maybeCompressInto(raw, setup.compression, (zstdScratch ??= Buffer.allocUnsafeSlow(zstdBound(cdc.maxSize))));
  /**
   * What this worker has to post to the main thread, in order, once the chunks it waits for
   * (compressed by the other worker) are back: messages go out in file order.
   */
  type Out = { msg: FromWorker; ready: boolean; seq: number };
  const outbox: Out[] = [];
  let inFlight = 0;
  let nextSeq = 0;
  let drained: (() => void) | undefined;
  /** To the main thread; a chunk's buffer is transferred. */
  const post = (msg: FromWorker) => (msg.type === 'chunk' ? port.postMessage(msg, [msg.data]) : port.postMessage(msg));
  const flush = () => {
    while (outbox.length > 0 && outbox[0]!.ready) post(outbox.shift()!.msg);
    if (outbox.length === 0 && drained) {
      const d = drained;
      drained = undefined;
      d();
    }
  };
  /** Posts `msg` to the main thread after what waits in the outbox. */
  const emit = (msg: FromWorker) => {
    if (outbox.length === 0) post(msg);
    else outbox.push({ msg, ready: true, seq: -1 });
  };
  const onPeer = (m: { request?: PeerRequest; reply?: PeerReply }) => {
    if (m.request) {
      // Another worker's chunk: compressed here as it would have been there (the same
      // binding and level). A failure here is this worker's error, which fails the pool.
      const { seq, buffer, length } = m.request;
      const raw = Buffer.from(buffer, 0, length);
      const { stored, flags } = compressChunk(raw);
      if (stored !== raw) raw.set(stored);
      peer!.postMessage({ reply: { seq, buffer, length: stored.length, flags } }, [buffer]);
      return;
    }
    const r = m.reply!;
    inFlight--;
    const o = outbox.find((x) => x.seq === r.seq)!;
    const msg = o.msg as Extract<FromWorker, { type: 'chunk' }>;
    msg.data = r.buffer;
    msg.length = r.length;
    msg.flags = r.flags;
    msg.byPeer = true;
    o.ready = true;
    flush();
  };
  /** Handles what the other worker sent (chunks to compress, chunks compressed), without waiting for the event loop. */
  const pollPeer = () => {
    if (!peer) return;
    for (let m = receiveMessageOnPort(peer); m; m = receiveMessageOnPort(peer)) onPeer(m.message as { request?: PeerRequest; reply?: PeerReply });
  };
  /** Whether the next new chunk's compression goes to the other worker: it is idle, and has room. */
  const peerHelps = () => peer !== undefined && inFlight < PEER_IN_FLIGHT && Atomics.load(idleFlags!, 2) === 1 && Atomics.load(idleFlags!, 1 - self) === 1;

  /** Chunks bytes [start, end) of a file (end = Infinity: to its end). */
  const chunkFile = async (job: number, path: string | Uint8Array, start0: number, end0: number, compress: boolean, known: Uint8Array | undefined, knownLengths: Uint32Array | undefined) => {
    // Each known chunk's ID (latin1) and its first place in `known`.
    const skip = new Map<string, number>();
    const count = known ? Math.floor(known.length / 32) : 0;
    for (let k = 0; k < count; k++) {
      const key = Buffer.from(known!.buffer, known!.byteOffset + 32 * k, 32).toString('latin1');
      if (!skip.has(key)) skip.set(key, k);
    }
    // Parent chunks in order (issue 13: FastCDC's pass over a changed database's unchanged
    // chunks). The parent chunk after the last one found again is tried first: the bytes
    // of its length hashed, and if the ID is the parent chunk's, the chunk is taken without
    // the cut. The ID is the keyed hash of the bytes, so only the same bytes match; and
    // FastCDC's cut from a chunk's start depends on that chunk's bytes alone (with the same
    // parameters, spec §6.1), so it lands where FastCDC's would. One exception: the
    // parent's last chunk may have ended where its file or region did (cut at the end, not
    // by its content), so it is tried only when it ends at this job's fixed end. When the
    // bytes differ FastCDC cuts as before, and where it cuts at the tried length (a change
    // in place) the hash already taken is the chunk's ID: no byte is hashed twice then.
    const predict = knownLengths !== undefined && knownLengths.length === count;
    let next = 0; // the parent chunk to try at the next chunk's start
    // Lost: a chunk was cut at another length than the parent chunk tried there (bytes
    // inserted or removed): which parent chunk comes next is unknown until one is found
    // again by its ID, and trying one at every chunk start would hash each new chunk twice.
    let lost = false;
    let triedAt = -1; // the file position where it was tried and did not match
    let triedLength = 0;
    let triedId: Buffer | undefined;
    let predicted = 0;
    // O_NOFOLLOW: a file replaced by a symlink since the walk saw it is not followed.
    // Synchronous calls, as for small files: this thread has nothing else to do meanwhile,
    // and libuv's pool, which every thread of the process shares, is where the main
    // thread's zstd calls, pack writes and fdatasyncs wait; a read queued behind them left
    // this worker idle (issue 13: both workers ~50% idle in the chat set's second backup).
    // O_NONBLOCK, then a regular file only: a FIFO put in the file's place since the walk
    // saw it would block the open (and the backup, its lock held) until a writer came;
    // a device node would be read without end.
    const fd = openSync(typeof path === 'string' ? path : Buffer.from(path.buffer, path.byteOffset, path.byteLength), OPEN_SOURCE);
    try {
      if (!fstatSync(fd).isFile()) throw notRegularFile();
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    let size = 0;
    let pos = start0;
    try {
      const buf = (readBuffer ??= Buffer.allocUnsafeSlow(READ_WINDOW));
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
          const bytesRead = want > 0 ? readSync(fd, buf, end, want, pos) : 0;
          if (bytesRead === 0) eof = true;
          end += bytesRead;
          size += bytesRead;
          pos += bytesRead;
          continue;
        }
        const at = pos - (end - start); // the chunk's place in the file
        if (predict && !lost && next < count && at !== triedAt) {
          const n = knownLengths[next]!;
          if (n > 0 && n <= end - start && (next < count - 1 || at + n === end0)) {
            pollPeer();
            const id = chunkId(buf.subarray(start, start + n));
            if (id.equals(Buffer.from(known!.buffer, known!.byteOffset + 32 * next, 32))) {
              start += n;
              next++;
              predicted++;
              emit({ type: 'known', job, id, rawLength: n });
              continue;
            }
            triedAt = at;
            triedLength = n;
            triedId = id;
          }
        }
        const n = cdc.cut(buf, start, end, eof);
        if (n === -1) continue;
        if (n === 0) break;
        pollPeer();
        const chunk = buf.subarray(start, start + n);
        const id = at === triedAt && n === triedLength ? triedId! : chunkId(chunk);
        const seen = skip.size > 0 ? skip.get(id.toString('latin1')) : undefined;
        if (seen !== undefined) {
          // Stored already (most of a changed database's chunks): its bytes would be copied
          // into a buffer, sent and dropped by the main thread's dedup (issue 13: ~200 MB of
          // the chat set's second backup), and would hold one of this worker's credits meanwhile.
          start += n;
          next = next < count && id.equals(Buffer.from(known!.buffer, known!.byteOffset + 32 * next, 32)) ? next + 1 : seen + 1;
          lost = false;
          emit({ type: 'known', job, id, rawLength: n });
          continue;
        }
        if (at === triedAt) {
          // A new chunk where a parent chunk was tried: of its length, that parent chunk
          // changed in place, and the one after it is tried next; else the place is lost.
          if (n === triedLength) next++;
          else lost = true;
        }
        const data = await takeBuffer();
        let out: Buffer = chunk;
        let flags: number | undefined;
        if (compress && setup.compression !== 'off' && peerHelps()) {
          // The other worker is idle: it compresses this chunk while this one cuts and hashes the next.
          new Uint8Array(data).set(chunk);
          start += n;
          const seq = nextSeq++;
          inFlight++;
          outbox.push({ msg: { type: 'chunk', job, id, data, length: n, rawLength: n, flags: undefined }, ready: false, seq });
          peer!.postMessage({ request: { seq, buffer: data, length: n } satisfies PeerRequest }, [data]);
          continue;
        }
        if (compress) {
          // zstd here, with this thread's reused context, rather than on libuv's pool after
          // the main thread's dedup: ~20% less CPU for the same frames, and no round trip.
          ({ stored: out, flags } = compressChunk(chunk));
        }
        new Uint8Array(data).set(out);
        start += n;
        emit({ type: 'chunk', job, id, data, length: out.length, rawLength: n, flags });
      }
    } finally {
      closeSync(fd);
    }
    // Every chunk out (some may still be with the other worker) before the job's end.
    while (outbox.length > 0) await new Promise<void>((r) => (drained = r));
    return { size, predicted };
  };

  /**
   * Reads up to `want` bytes (the expected size + 1: one more shows the file grew) into
   * `buf` at `at`; O_NOFOLLOW as above. A short read is the end of a regular file (one
   * read call per file, not two); were it not, the size check after it sees a change.
   * Then the file's stat after the read, from the descriptor (fstat, not a second lookup
   * of the path: ~1.5 µs less per file), into `after` at 4 × `k` (size, mtimeNs, ctimeNs,
   * ino), with HasAfter set in `status` (left 0 when it is not a regular file). It is the stat of the
   * bytes read; a file renamed over the path meanwhile is another file, seen by the next
   * backup (its inode and ctime differ from this one's).
   */
  const readSmallInto = (path: Buffer, buf: Buffer, at: number, want: number, after: BigUint64Array, status: Int32Array, k: number): number => {
    const fd = openSync(path, OPEN_SOURCE);
    try {
      let got = 0;
      try {
        while (got < want) {
          const n = readSync(fd, buf, at + got, want - got, null);
          got += n;
          if (n === 0 || got < want) break;
        }
      } catch (e) {
        // A FIFO put in its place (O_NONBLOCK: nothing to read yet): the stat below is
        // not a regular file's, so the file counts as changed and is read again the
        // ordinary way, which refuses it.
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      }
      try {
        const st = fstatSync(fd, { bigint: true });
        if (st.isFile()) {
          const a = 4 * k;
          after[a] = st.size;
          after[a + 1] = BigInt.asUintN(64, st.mtimeNs);
          after[a + 2] = BigInt.asUintN(64, st.ctimeNs);
          after[a + 3] = st.ino;
          status[SMALL_STATUS * k + SmallStatus.HasAfter] = 1;
        }
      } catch {
        // no stat: HasAfter stays 0, the file counts as changed
      }
      return got;
    } finally {
      closeSync(fd);
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
    const n = paths.length;
    let room = 0;
    for (let i = 0; i < n; i++) room += sizes[i]! + 1;
    // Every file's bytes back to back in one buffer: no allocation per file (nor per
    // batch, when a buffer given back by an earlier batch is large enough).
    const reuse = batchBuffers.findIndex((b) => b.length >= room);
    const raw = reuse >= 0 ? batchBuffers.splice(reuse, 1)[0]! : Buffer.allocUnsafeSlow(roomFor(room));
    const ids = new Uint8Array(32 * n);
    const status = new Int32Array(SMALL_STATUS * n);
    const after = new BigUint64Array(4 * n);
    const extras: SmallFileExtra[] = [];
    const views: Array<Buffer | null> = [];
    let pos = 0;
    for (let i = 0; i < n; i++) {
      const path = paths[i]!;
      const s = SMALL_STATUS * i;
      let got: number;
      try {
        got = readSmallInto(path, raw, pos, sizes[i]! + 1, after, status, i);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        views.push(null);
        extras.push({ k: i, error: { code: err.code ?? 'EUNKNOWN', message: err.message } });
        continue;
      }
      const view = raw.subarray(pos, pos + got);
      pos += got;
      ids.set(chunkIdUnder(idKey, view), 32 * i);
      views.push(view);
      status[s + SmallStatus.Ok] = 1;
      status[s + SmallStatus.Size] = got;
      // The xattr binding takes text paths: names that are not UTF-8 are left to the caller.
      if (withXattrs && isUtf8(path)) {
        try {
          const x = readXattrsSync(path.toString('utf8'));
          if (x.length > 0) extras.push({ k: i, xattrs: x });
        } catch (e) {
          const err = e as NodeJS.ErrnoException;
          extras.push({ k: i, xattrError: { ...(err.code !== undefined ? { code: err.code } : {}), message: String(err.message ?? err) } });
        }
      }
    }
    // Compressed on this thread, one file after another, with a reused zstd context
    // (compress.ts), straight into a reused staging buffer with room for every file's
    // zstd bound: zstd wrote each file into a buffer of its own, copied once more after
    // (two allocations and two copies per small file, issue 13); one buffer carries the
    // whole batch back.
    let bound = 0;
    for (let i = 0; i < n; i++) bound += zstdBound(views[i]?.length ?? 0);
    if (!staging || staging.length < bound) staging = Buffer.allocUnsafeSlow(roomFor(bound));
    const out = staging;
    let o = 0;
    for (let i = 0; i < n; i++) {
      const r = views[i];
      if (!r) continue;
      const s = SMALL_STATUS * i;
      let flags = 0;
      let length = r.length;
      if (setup.compression !== 'off') {
        const x = maybeCompressInto(r, setup.compression, out.subarray(o));
        flags = x.flags;
        length = x.stored.length;
        // Stored raw: zstd's output (if any) is overwritten by the raw bytes.
        if (x.stored === r) r.copy(out, o);
      } else r.copy(out, o);
      status[s + SmallStatus.Flags] = flags;
      status[s + SmallStatus.Offset] = o;
      status[s + SmallStatus.Length] = length;
      o += length;
    }
    const total = o;
    const data = new Uint8Array(takeDataBuffer(total), 0, total);
    data.set(out.subarray(0, total));
    // The staging buffer is kept for the next batch (a larger one only while it stays under BATCH_BUFFER_MAX).
    if (out.length > BATCH_BUFFER_MAX) staging = undefined;
    // `raw` (and every view of it) is done with: compressed output and copies only from here.
    if (raw.length <= BATCH_BUFFER_MAX && batchBuffers.length < BATCHES_COMPRESSING) batchBuffers.push(raw);
    port.postMessage({ type: 'batch', job, status, after, extras, ids: ids.buffer, data: data.buffer, length: total } satisfies FromWorker, [ids.buffer, data.buffer, status.buffer, after.buffer]);
  };

  const compressing = new Set<Promise<void>>();
  const pump = async () => {
    if (busy) return;
    busy = true;
    while (queue.length > 0) {
      const q = queue.shift()!;
      if (q.type === 'batch') {
        // The reads run now (synchronously); the compression on libuv's pool finishes in
        // the background while the next batch is read, up to BATCHES_COMPRESSING at once.
        const job = q.job;
        const p = chunkBatch(job, q.paths, q.sizes, q.xattrs).catch((e: unknown) => {
          const err = e as NodeJS.ErrnoException;
          port.postMessage({ type: 'error', job, code: err.code ?? 'EUNKNOWN', message: err.message } satisfies FromWorker);
        });
        compressing.add(p);
        void p.finally(() => compressing.delete(p));
        if (compressing.size >= BATCHES_COMPRESSING) await Promise.race(compressing);
        continue;
      }
      const { job, path, start, end, compress, known, knownLengths } = q;
      try {
        const { size, predicted } = await chunkFile(job, path, start, end, compress, known, knownLengths);
        // Idle from here unless more work waits (set before the job's end goes out, so the
        // main thread's next job, to the other worker, finds this one idle).
        if (queue.length === 0) setIdle(true);
        port.postMessage({ type: 'done', job, size, predicted } satisfies FromWorker);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        // After the job's chunks still with the other worker: a job's chunks, then its end.
        emit({ type: 'error', job, code: err.code ?? 'EUNKNOWN', message: err.message });
      }
    }
    busy = false;
    setIdle(true);
  };

  port.on('message', (m: ToWorker) => {
    if (m.type === 'peer') {
      // Two workers: with the main thread and V8's helpers, more threads than this machine's
      // (two) cores want to run; the main thread, which feeds both, goes first (thread-priority.ts).
      lowerThisThreadPriority(setup.niceDelta);
      peer = m.port;
      idleFlags = m.idle;
      self = m.self;
      setIdle(!busy && queue.length === 0);
      peer.on('message', onPeer);
    } else if (m.type === 'ack') {
      free.push(m.buffer);
      const w = creditWaiter;
      creditWaiter = undefined;
      w?.();
    } else if (m.type === 'batch-data') {
      keepDataBuffer(m.buffer);
    } else {
      setIdle(false);
      queue.push(m);
      void pump();
    }
  });
}
