/**
 * FastCDC content-defined chunking (Xia et al., USENIX ATC'16) with normalized chunking
 * (NC level 2) and cut-point skipping. The gear table is derived from the backup key
 * (spec/backup-format.md §6.1), so chunk boundaries, and with them chunk sizes, reveal
 * nothing about the content to someone without the key.
 *
 * A 32-bit gear hash: after 32 rolls every earlier byte has been shifted out, so the
 * hash depends on the last 32 bytes only. Masks use the high bits, whose window is the
 * widest.
 */
import { allZero } from '../zeros.js';
import { newGearLoop, type GearLoop } from './gear-loop.js';

export interface ChunkerParams {
  minSize: number;
  avgSize: number;
  maxSize: number;
}

/**
 * Default parameters of new repositories: 256 KiB / 512 KiB / 2 MiB. Half restic's
 * sizes: on the chat-app data set a day of changes then adds ~11% fewer bytes (scattered
 * SQLite page updates dedup better), and the small maximum bounds memory per chunk.
 */
export const DEFAULT_CHUNKER: ChunkerParams = { minSize: 256 * 1024, avgSize: 512 * 1024, maxSize: 2 * 1024 * 1024 };

export function validateChunkerParams(p: ChunkerParams): void {
  const pow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!pow2(p.avgSize) || p.avgSize < 1024 || p.avgSize > 1 << 26) throw new RangeError('avgSize: a power of two in [1 KiB, 64 MiB]');
  if (!(p.minSize >= 64 && p.minSize <= p.avgSize)) throw new RangeError('minSize: between 64 and avgSize');
  if (!(p.maxSize >= p.avgSize && p.maxSize <= 1 << 28)) throw new RangeError('maxSize: between avgSize and 256 MiB');
}

function highMask(bits: number): number {
  // `bits` one-bits at the top of a 32-bit word.
  return bits >= 32 ? -1 : ~((1 << (32 - bits)) - 1);
}

/**
 * Where `cut` cuts a run of zeros (0: not before maxSize): the spec's loop over zero bytes,
 * from minSize, `h = ((h << 1) + g0) | 0` and a cut after byte i when `h & mask` is 0
 * (maskS before avgSize, maskL from it on). Rolled byte by byte up to maxSize, that loop
 * cost ~23 ms per chunker when no cut came (interpreted: it runs once per thread), on
 * every backup's main thread and chunk workers (issue 13). It need not run that far: with
 * d = h − (−g0), each step doubles d (mod 2³²), so after at most 32 steps h stays at −g0
 * for good; from there the maskS test fails (or passed already) up to avgSize, and the
 * one maskL test left is the first byte at avgSize.
 */
export function zeroCutOf(g0: number, params: ChunkerParams, maskS: number, maskL: number): number {
  const { minSize: min, avgSize: avg, maxSize: max } = params;
  for (let i = min, h = 0; i < max; i++) {
    const next = ((h << 1) + g0) | 0;
    if ((next & (i < avg ? maskS : maskL)) === 0) return i + 1;
    if (next === h) {
      // h is fixed from here on; it failed its mask at byte i. Before avgSize the only
      // other mask comes at avgSize itself (if that byte is before maxSize).
      return i < avg && avg < max && (h & maskL) === 0 ? avg + 1 : 0;
    }
    h = next;
  }
  return 0;
}

export class FastCdc {
  readonly #gear: Int32Array;
  readonly #min: number;
  readonly #avg: number;
  readonly #max: number;
  readonly #maskS: number;
  readonly #maskL: number;
  /**
   * Where a chunk of zeros is cut: the length `cut` returns when every byte it hashes is
   * zero (the hash then depends on the position alone), or 0 when no cut point comes
   * before maxSize. See `cut`'s fast path.
   */
  readonly #zeroCut: number;
  /**
   * The byte loop below, run as WebAssembly (gear-loop.ts); made on first use: a thread's
   * first WebAssembly instance costs ~2 MiB of memory, and a chunker of small files only
   * (a home directory's tree) never needs it.
   */
  #loop: GearLoop | undefined;

  /** @param gearBytes 1024 key-derived bytes: 256 little-endian 32-bit gear values. */
  constructor(gearBytes: Uint8Array, params: ChunkerParams = DEFAULT_CHUNKER) {
    if (gearBytes.length !== 1024) throw new RangeError('gearBytes: expected 1024 bytes');
    validateChunkerParams(params);
    this.#gear = new Int32Array(256);
    const dv = new DataView(gearBytes.buffer, gearBytes.byteOffset, gearBytes.byteLength);
    for (let i = 0; i < 256; i++) this.#gear[i] = dv.getInt32(i * 4, true);
    this.#min = params.minSize;
    this.#avg = params.avgSize;
    this.#max = params.maxSize;
    const bits = Math.log2(params.avgSize);
    // NC level 2: harder mask before the average size, easier after it.
    this.#maskS = highMask(bits + 2);
    this.#maskL = highMask(bits - 2);
    this.#zeroCut = zeroCutOf(this.#gear[0]!, params, this.#maskS, this.#maskL);
  }

  get maxSize(): number {
    return this.#max;
  }

  /**
   * Length of the next chunk of `data[start, end)`. When `eof` is false and no cut
   * point is found before `end`, returns -1 (feed more bytes) unless `maxSize` bytes
   * are available.
   */
  cut(data: Uint8Array, start: number, end: number, eof: boolean): number {
    const available = end - start;
    if (available <= this.#min) return eof ? available : -1;
    const limit = Math.min(available, this.#max);
    // Zeros (a disk image's or a database's unused space): where the bytes hashed are all
    // zero the loops below would end where #zeroCut says, so it is checked natively
    // instead of rolling the hash over each byte. The same cut points, ~20x faster.
    if (data[start + this.#min] === 0) {
      const zeroEnd = this.#zeroCut > 0 && this.#zeroCut <= limit ? this.#zeroCut : limit;
      if (allZero(data, start + this.#min, start + zeroEnd)) {
        if (zeroEnd < limit || this.#zeroCut === limit) return zeroEnd;
        return limit === this.#max || eof ? limit : -1;
      }
    }
    // Roll the gear hash from start + min: the harder mask before the average size, the
    // easier one after it, up to the limit (gear-loop.ts runs this loop):
    //   h = ((h << 1) + gear[data[i]]) | 0; a cut after byte i when (h & mask) === 0
    this.#loop ??= newGearLoop(this.#gear);
    const found = this.#loop.find(data, start + this.#min, start + Math.min(limit, this.#avg), start + limit, this.#maskS, this.#maskL);
    if (found >= 0) return found - start;
    if (limit === this.#max || eof) return limit;
    return -1;
  }
}
