/**
 * Compression where it pays (spec §7.2): zstd on libuv's thread pool, so it runs beside
 * the main thread, or on the chunk worker that read the blob. Incompressible chunks
 * (photos, video) are detected by their first 64 KiB: bytes that look random, or that
 * zstd does not shrink, and stored raw when the whole would not shrink by at least 1/32.
 *
 * Modes (`--compression`): auto (level 3, the default), off (every blob raw), max (level 9
 * for blobs under 1 MiB, 19 from 1 MiB). Level 19 is the highest whose window (8 MiB)
 * every reader must accept (spec §7.2), but through this binding each call at level 12 or
 * more costs 0.15-0.5 s whatever the input's size (measured: 500 ms per 7 KiB file at 19,
 * 1.6 ms at 9), so small blobs, where the gain is smallest, get level 9.
 */
import { createRequire } from 'node:module';
import { CofferError } from '../errors.js';
import { BLOB_COMPRESSED, BLOB_PADDED } from './blob.js';
import { Compression, type RepositoryConfig } from './config.js';
import { napiBinding } from './native-binding.js';
import { unpadBlob } from './padding.js';

/**
 * The native binding itself: @mongodb-js/zstd's `compress` wrapper (index.js, 1.2.2)
 * drops its `level` argument, so through it every level is libzstd's default (3).
 */
interface ThreadPoolZstd {
  compress(data: Buffer, level?: number): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
}
/**
 * Loaded at its first use, not with this module: a chunk worker compresses with zstd-napi
 * alone, and this binding's loader costs each thread ~8 ms (its libc probe builds a whole
 * process report, its search for a prebuilt binary throws and catches errors).
 */
let threadPoolZstd: ThreadPoolZstd | undefined;
const zstdNative = (): ThreadPoolZstd => (threadPoolZstd ??= napiBinding<ThreadPoolZstd>('@mongodb-js/zstd', '@mongodb-js/zstd/bindings.js'));

/**
 * Small files are compressed synchronously, on the chunk worker that read them, with one
 * zstd context per thread reused from call to call (zstd-napi, which bundles libzstd and
 * builds it at install). Through @mongodb-js/zstd every call is a thread-pool round trip
 * with a fresh context: measured on the tree's text files (6.2 KiB, one session), 41.9 µs
 * of CPU per compress against 17.4 µs with a reused context; on the 50,000-file tree about
 * 0.6 s of a first backup's 4 s of CPU (issue 13). Large chunks too are compressed on the
 * worker that read them (maybeCompressInto), but those the main thread compresses (a
 * changed file's chunks missing from the repository, tree blobs) keep the thread pool:
 * they would hold the main thread for milliseconds. Decompression: see decompressBlob
 * and decompressBlobHere.
 */
const zstdSync = createRequire(import.meta.url)('zstd-napi/binding') as {
  CCtx: new () => { compress2(dst: Uint8Array, src: Uint8Array): number; setParameter(param: number, value: number): void };
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  compressBound(n: number): number;
  CParameter: { compressionLevel: number; contentSizeFlag: number };
};
let cctx: InstanceType<typeof zstdSync.CCtx> | undefined;
let cctxLevel = NaN;

/**
 * zstd of `data` into `out` (at least zstdBound(data.length) bytes) with this thread's
 * context: the compressed length. The frame carries no content size (spec §7.2), as
 * the thread pool's binding writes them: its header is the same 0x00.
 */
export function zstdCompressInto(out: Uint8Array, data: Uint8Array, level: number): number {
  try {
    if (!cctx) {
      cctx = new zstdSync.CCtx();
      cctx.setParameter(zstdSync.CParameter.contentSizeFlag, 0);
    }
    if (level !== cctxLevel) {
      cctx.setParameter(zstdSync.CParameter.compressionLevel, level);
      cctxLevel = level;
    }
    return cctx.compress2(out, data);
  } catch (e) {
    throw new Error(`zstd: ${(e as Error).message}`, { cause: e });
  }
}

/** The most bytes zstd can make of `n` bytes: the size of maybeCompressInto's scratch buffer. */
export function zstdBound(n: number): number {
  return zstdSync.compressBound(n);
}

async function zstdCompress(data: Buffer, level: number): Promise<Buffer> {
  try {
    return await zstdNative().compress(data, level);
  } catch (e) {
    throw new Error(`zstd: ${(e as Error).message}`, { cause: e });
  }
}

/** How a backup compresses its blobs. */
export type CompressionMode = 'auto' | 'off' | 'max';
export const COMPRESSION_MODES: readonly CompressionMode[] = ['auto', 'off', 'max'];

/** zstd levels per mode: auto's is what spec §7.2 describes; max's window is at most 8 MiB. */
export const COMPRESSION_LEVEL = { auto: 3, max: 19, maxSmall: 9 } as const;
/** Blobs under this size get `maxSmall` with max (see the header). */
export const MAX_LEVEL_FROM_BYTES = 1 << 20;
const SAMPLE_LEVEL = 1;
const SAMPLE = 64 * 1024;

/** Small blobs from this size on are checked for random-looking bytes before zstd is tried (auto). */
export const RANDOM_CHECK_FROM = 512;
/** Four byte histograms side by side (see looksRandom). */
const histograms = new Uint32Array(4 * 256);

/**
 * Whether `b`'s byte frequencies are those of random bytes (media, archives, encrypted
 * data): entropy within three times the small-sample bias (255 / (2 n ln 2) bits) of
 * 8 bits per byte. Compressible small files measure far lower (text and the like: under
 * 6 bits): zstd is not tried on these blobs. A zstd call costs a thread-pool round trip
 * and a fresh compression context, which for a small file is most of its backup's CPU
 * (issue 13: 50 µs a call, half of them for nothing on a tree of ordinary small files).
 */
export function looksRandom(b: Uint8Array): boolean {
  const n = b.length;
  // Bytes counted four at a time into four histograms, summed per byte value after: with
  // one, each count waited for the one before when neighbouring bytes were alike (text).
  // The counts, and so the result, are the same; this loop was a tenth of a small-file
  // backup's CPU (issue 13: 300 MB through it on the 50,000-file tree).
  const h = histograms;
  h.fill(0);
  const whole = n & ~3;
  let i = 0;
  for (; i < whole; i += 4) {
    h[b[i]!]!++;
    h[256 + b[i + 1]!]!++;
    h[512 + b[i + 2]!]!++;
    h[768 + b[i + 3]!]!++;
  }
  for (; i < n; i++) h[b[i]!]!++;
  // The counts summed per byte value (back into the first histogram), and their squares:
  // random bytes are decided by those, without the 256 logarithms (a third of the check's
  // time on a random small file), when nearlyUniform says so, which implies the entropy test.
  let squares = 0;
  for (let k = 0; k < 256; k++) {
    const c = h[k]! + h[256 + k]! + h[512 + k]! + h[768 + k]!;
    h[k] = c;
    squares += c * c;
  }
  if (nearlyUniform(squares, n)) return true;
  let e = 0;
  for (let k = 0; k < 256; k++) {
    const c = h[k]!;
    if (c !== 0) e -= c * Math.log2(c / n);
  }
  return e / n >= 8 - (3 * 255) / (2 * n * Math.LN2) - 0.02;
}

/**
 * Pearson's statistic X = 256 Σc² / n − n of `n` bytes whose counts per byte value have
 * the squares' sum `squares` is at most NEARLY_UNIFORM_MAX (random bytes: 255 on average,
 * standard deviation 23; over 380 about once in a million). Then their entropy passes
 * looksRandom's test: its shortfall from 8 bits, the divergence D from the uniform
 * distribution, is at most log2(1 + X/n) ≤ X / (n ln 2) (Jensen: D ≤ log2 Σ p²·256), under
 * 380 / (n ln 2), and the test allows 3 × 255 / (2 n ln 2) + 0.02. Exact in integers:
 * Σc² ≤ n² < 2^53 for every blob size checked. Never for no bytes (the test says no: 0/0).
 */
const NEARLY_UNIFORM_MAX = 380;
function nearlyUniform(squares: number, n: number): boolean {
  return n > 0 && 256 * squares <= (n + NEARLY_UNIFORM_MAX) * n;
}

/**
 * The first look of randomCheck (fewValuesInMiddle): the RANDOM_PROBE_BYTES in the middle
 * of a blob of more than twice as many must hold at least RANDOM_PROBE_DISTINCT distinct
 * byte values.
 * Random bytes hold 162 on average there, with a standard deviation of 5 (under 100 is
 * more than 12 deviations away; 20,000 simulated probes: never under 143); text, a few
 * dozen.
 */
export const RANDOM_PROBE_BYTES = 256;
export const RANDOM_PROBE_DISTINCT = 100;
/** The byte values seen by fewValuesInMiddle (1 each). */
const seen = new Uint8Array(256);

/**
 * Whether `b` has more than 2 × RANDOM_PROBE_BYTES and the RANDOM_PROBE_BYTES in its
 * middle hold fewer than RANDOM_PROBE_DISTINCT distinct byte values: not random (see
 * randomCheck). The middle, not the start: a media file's header (tables, metadata) does
 * not look random where its data does.
 */
function fewValuesInMiddle(b: Uint8Array): boolean {
  const n = b.length;
  if (n <= 2 * RANDOM_PROBE_BYTES) return false;
  const from = (n - RANDOM_PROBE_BYTES) >> 1;
  const to = from + RANDOM_PROBE_BYTES;
  const s = seen;
  s.fill(0);
  let distinct = 0;
  for (let i = from; i < to; i++) {
    const x = b[i]!;
    distinct += 1 - s[x]!;
    s[x] = 1;
  }
  return distinct < RANDOM_PROBE_DISTINCT;
}

/**
 * What compression decides on (spec §7.2): looksRandom(b), unless the bytes in the middle
 * of `b` hold few distinct values (fewValuesInMiddle): then it is taken as not random,
 * uncounted (zstd is tried, as for every blob looksRandom says no to). Random data always
 * has that many (see RANDOM_PROBE_DISTINCT), so it is still counted in full and decided by
 * looksRandom; a text file was counted in full for nothing (issue 13: half of the
 * 50,000-file tree's 300 MB).
 */
export function randomCheck(b: Uint8Array): boolean {
  return !fewValuesInMiddle(b) && (sampleNearlyUniform(b) || looksRandom(b));
}

/**
 * The sample of randomCheck's second look: RANDOM_SAMPLE_WINDOWS windows, the first at
 * the blob's start, the last at its end, the others evenly between, of an eighth of the
 * blob in all but of RANDOM_SAMPLE_WINDOW bytes at least (1 KiB in all), taken from blobs
 * of RANDOM_SAMPLE_FROM bytes (twice that least sample) up to RANDOM_SAMPLE_BELOW: small
 * files. A large chunk's first 64 KiB (and a blob from 64 KiB on) is counted in full: the
 * 64 KiB looks of jar and .pak files, deflated data just under 8 bits per byte, are
 * where a sample decided otherwise than the full count (see SAMPLE_UNIFORM_MAX).
 */
export const RANDOM_SAMPLE_WINDOWS = 16;
export const RANDOM_SAMPLE_WINDOW = 64;
export const RANDOM_SAMPLE_FROM = 2 * RANDOM_SAMPLE_WINDOWS * RANDOM_SAMPLE_WINDOW;
export const RANDOM_SAMPLE_BELOW = SAMPLE;
/**
 * The sample's bound on Pearson's statistic: random bytes' average (255) plus about two
 * standard deviations, stricter than the whole blob's (NEARLY_UNIFORM_MAX): a sample is
 * smaller than its blob, and tells less. Random bytes pass it 93% of the time (the others
 * are counted in full). Measured against the full count on this machine's files (/usr,
 * /opt, /etc, /root, /var/cache, node_modules, the chat set and the 50,000-file tree:
 * 361,295 files and 64 KiB looks of large files, 60,475 random): every decision the same.
 * With 380 (the whole blob's bound) the first 64 KiB of two jar files, deflated data just
 * under 8 bits per byte, were taken as random where the full count said not; a fixed
 * 1 KiB sample with 380 did so for 68 such looks (jar, .pak, .zip).
 */
const SAMPLE_UNIFORM_MAX = 300;
/** The sample's byte counts (see sampleNearlyUniform). */
const sampleCounts = new Uint32Array(4 * 256);

/**
 * Whether `b` has RANDOM_SAMPLE_FROM bytes to RANDOM_SAMPLE_BELOW and its sample (RANDOM_SAMPLE_WINDOWS)
 * is nearly uniform (Pearson's statistic at most SAMPLE_UNIFORM_MAX): random, without the
 * full count (issue 13: random small files were half of the 50,000-file tree's bytes,
 * each counted in full). A blob that is not random throughout shows in the windows:
 * bytes that are not random (text, tables, headers, zeros) in a few of them put the
 * statistic above the bound (64 bytes of text in one window of 64 add about 90; the bound
 * is 45 above random bytes' average). What lies between the windows is not seen: the
 * trade of spec §7.2.
 */
function sampleNearlyUniform(b: Uint8Array): boolean {
  const n = b.length;
  if (n < RANDOM_SAMPLE_FROM || n >= RANDOM_SAMPLE_BELOW) return false;
  const h = sampleCounts;
  h.fill(0);
  // A multiple of 4, counted four at a time into four histograms (as in looksRandom).
  const width = Math.max(RANDOM_SAMPLE_WINDOW, Math.floor(n / (8 * RANDOM_SAMPLE_WINDOWS)) & ~3);
  const step = (n - width) / (RANDOM_SAMPLE_WINDOWS - 1);
  for (let w = 0; w < RANDOM_SAMPLE_WINDOWS; w++) {
    const from = Math.floor(w * step);
    const to = from + width;
    for (let i = from; i < to; i += 4) {
      h[b[i]!]!++;
      h[256 + b[i + 1]!]!++;
      h[512 + b[i + 2]!]!++;
      h[768 + b[i + 3]!]!++;
    }
  }
  let squares = 0;
  for (let k = 0; k < 256; k++) {
    const c = h[k]! + h[256 + k]! + h[512 + k]! + h[768 + k]!;
    squares += c * c;
  }
  const m = RANDOM_SAMPLE_WINDOWS * width;
  return 256 * squares <= (m + SAMPLE_UNIFORM_MAX) * m;
}

/**
 * `auto|off|max`; a RangeError naming the choices otherwise.
 * @throws {RangeError} for anything else
 */
export function parseCompressionMode(s: string): CompressionMode {
  if ((COMPRESSION_MODES as readonly string[]).includes(s)) return s as CompressionMode;
  throw new RangeError(`compression: '${s}' is not one of ${COMPRESSION_MODES.join(', ')}`);
}

/** The mode a repository's config asks for when a backup names none (§4: the writer's default). */
export function defaultCompression(config: Pick<RepositoryConfig, 'compression'>): CompressionMode {
  return config.compression === Compression.None ? 'off' : 'auto';
}

/** What maybeCompress does with a blob: store it raw, or try zstd at `level` (after a sample, for large ones). */
type Plan = { raw: true } | { raw: false; sampleFirst: boolean; level: number };

/** The decisions of maybeCompress and maybeCompressInto, made once for both. */
function compressionPlan(raw: Buffer, mode: CompressionMode): Plan {
  if (mode === 'off' || raw.length < 64) return { raw: true };
  let sampleFirst = raw.length >= 4 * SAMPLE;
  // auto: bytes that look random are not worth a zstd call, the whole blob's for small
  // blobs, the sample's for large ones. On the 1 GiB chat set the large chunks' check
  // agreed with the zstd sample on every chunk (1,812) at 61 ms against 146 ms of zstd.
  if (mode === 'auto' && raw.length >= RANDOM_CHECK_FROM) {
    const look = sampleFirst ? raw.subarray(0, SAMPLE) : raw;
    if (randomCheck(look)) return { raw: true };
    // Text-like bytes: the sample, which is there to spare zstd incompressible data,
    // would only cost its own zstd call (issue 13: 76 ms of the chat set's 262 MB
    // database, 498 of its 499 chunks, against 725 ms for the chunks themselves).
    if (sampleFirst && fewValuesInMiddle(look)) sampleFirst = false;
  }
  const level = mode === 'auto' ? COMPRESSION_LEVEL.auto : raw.length >= MAX_LEVEL_FROM_BYTES ? COMPRESSION_LEVEL.max : COMPRESSION_LEVEL.maxSmall;
  return { raw: false, sampleFirst, level };
}

/** Whether a compressed sample or blob of `n` bytes shrank enough (by 1/32) to be worth it. */
const shrank = (compressed: Buffer, n: number) => compressed.length <= n - n / 32;

/** The blob as stored: compressed when zstd's output `c` shrank enough, else raw. */
function storedForm(raw: Buffer, c: Buffer): { stored: Buffer; flags: number } {
  return shrank(c, raw.length) ? { stored: c, flags: BLOB_COMPRESSED } : { stored: raw, flags: 0 };
}

/**
 * Compresses `raw` for storage under `mode`; `flags` says whether it was (§7.1). Off
 * stores raw; auto and max store raw what would not shrink by 1/32 (sampled first for
 * chunks of 256 KiB or more: with auto, not those whose sample's middle bytes hold few
 * distinct values), and chunks under 64 bytes; auto also stores raw, without trying,
 * chunks of 512 bytes to 256 KiB whose bytes look random (randomCheck), and larger
 * chunks whose first 64 KiB do.
 */
export async function maybeCompress(raw: Buffer, mode: CompressionMode = 'auto'): Promise<{ stored: Buffer; flags: number }> {
  const plan = compressionPlan(raw, mode);
  if (plan.raw) return { stored: raw, flags: 0 };
  if (plan.sampleFirst && !shrank(await zstdCompress(raw.subarray(0, SAMPLE), SAMPLE_LEVEL), SAMPLE)) return { stored: raw, flags: 0 };
  return storedForm(raw, await zstdCompress(raw, plan.level));
}

/**
 * maybeCompress for a large chunk on a chunk worker, on that thread with its reused
 * context: the same decisions, frames of the same form (spec §7.2). zstd writes into `scratch` (at least
 * zstdBound(raw.length) bytes): `stored` is a view of it when compressed, else `raw`.
 * For the main thread, whose time it would take, maybeCompress.
 */
export function maybeCompressInto(raw: Buffer, mode: CompressionMode, scratch: Buffer): { stored: Buffer; flags: number } {
  const plan = compressionPlan(raw, mode);
  if (plan.raw) return { stored: raw, flags: 0 };
  if (plan.sampleFirst && !shrank(scratch.subarray(0, zstdCompressInto(scratch, raw.subarray(0, SAMPLE), SAMPLE_LEVEL)), SAMPLE)) return { stored: raw, flags: 0 };
  return storedForm(raw, scratch.subarray(0, zstdCompressInto(scratch, raw, plan.level)));
}

let dctx: InstanceType<typeof zstdSync.DCtx> | undefined;

/**
 * A blob's raw bytes, decompressed on libuv's thread pool: for a backup reading its
 * parent's trees, whose walk waits for them (3.5% slower on the calling thread, on the
 * chat set's second backup), and the other readers that are not restore.
 */
export async function decompressBlob(stored: Buffer, flags: number, rawLength: number, where: string): Promise<Buffer> {
  const s = storedBytes(stored, flags, rawLength, where);
  if (!s.compressed) return s.bytes;
  let out: Buffer;
  try {
    out = await zstdNative().decompress(s.bytes);
  } catch {
    throw new CofferError('corrupt', `${where}: blob does not decompress`);
  }
  if (out.length !== rawLength) throw new CofferError('corrupt', `${where}: blob has the wrong length after decompression`);
  return out;
}

/**
 * decompressBlob on the calling thread (restore's main thread and writer thread), with the
 * same checks and errors, straight into a buffer of the raw length (zstd-napi, a reused
 * context): through the thread pool each call allocated its output as it went, and a
 * restore's thread pool held tens of MiB that way (issue 13). With `into` (at least
 * rawLength bytes, reused by a caller done with the previous result), into that.
 */
export function decompressBlobHere(stored: Buffer, flags: number, rawLength: number, where: string, into?: Buffer): Buffer {
  const s = storedBytes(stored, flags, rawLength, where);
  return s.compressed ? decompressFrameHere(s.bytes, rawLength, where, into) : s.bytes;
}

/** A blob's stored bytes unpadded and checked (§7.1, §7.2): its raw bytes, or (`compressed`) exactly one zstd frame. */
function storedBytes(stored: Buffer, flags: number, rawLength: number, where: string): { bytes: Buffer; compressed: boolean } {
  if ((flags & BLOB_PADDED) !== 0) stored = unpadBlob(stored, where);
  if ((flags & BLOB_COMPRESSED) === 0) {
    if (stored.length !== rawLength) throw new CofferError('corrupt', `${where}: blob has the wrong length`);
    return { bytes: stored, compressed: false };
  }
  if (zstdFrameEnd(stored) !== stored.length) {
    throw new CofferError('corrupt', `${where}: compressed blob is not exactly one zstd frame`);
  }
  return { bytes: stored, compressed: true };
}

/** Decompresses one checked frame into a buffer of its raw length (zstd-napi, a reused context). */
function decompressFrameHere(frame: Buffer, rawLength: number, where: string, into?: Buffer): Buffer {
  let out: Buffer;
  try {
    // A frame that decodes to more than rawLength bytes fails here: it does not fit.
    out = into && into.length >= rawLength ? into.subarray(0, rawLength) : Buffer.allocUnsafe(rawLength);
    out = out.subarray(0, (dctx ??= new zstdSync.DCtx()).decompress(out, frame));
  } catch {
    throw new CofferError('corrupt', `${where}: blob does not decompress`);
  }
  if (out.length !== rawLength) throw new CofferError('corrupt', `${where}: blob has the wrong length after decompression`);
  return out;
}

const ZSTD_MAGIC = 0xfd2fb528;

/**
 * Where the zstd frame (RFC 8878 §3.1.1) at the start of `b` ends, or -1 when `b` does
 * not start with a well-formed frame header and block sequence. Spec §7.2: a compressed
 * blob is exactly one frame: no skippable frames, no second frame, no trailing bytes
 * (libzstd alone would accept the first two).
 */
export function zstdFrameEnd(b: Buffer): number {
  if (b.length < 6 || b.readUInt32LE(0) !== ZSTD_MAGIC) return -1;
  const fhd = b[4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  if ((fhd >> 3) & 1) return -1; // reserved bit
  let o = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag]! + [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
  for (;;) {
    if (o + 3 > b.length) return -1;
    const h = b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16);
    const last = h & 1;
    const type = (h >> 1) & 3;
    const size = h >>> 3;
    if (type === 3) return -1; // reserved block type
    o += 3 + (type === 1 ? 1 : size); // an RLE block stores one byte
    if (o > b.length) return -1;
    if (last) break;
  }
  o += checksum ? 4 : 0;
  return o > b.length ? -1 : o;
}
