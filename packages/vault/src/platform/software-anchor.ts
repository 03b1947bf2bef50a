/**
 * The software platform's anchor file, `<keyFile>.anchor` (NOT tamper-resistant: whoever
 * can write that folder can roll it back; docs/threat-model.md).
 *
 * Format (since issue 13): 1024 bytes, two 512-byte slots written alternately in place.
 *
 *   slot = magic "CFANCHR1" (8) ‖ generation (u64 BE) ‖ length (u16 BE) ‖ value (length ≤ 256)
 *          ‖ zeros up to byte 480 ‖ SHA-256 of bytes 0..480 (32)
 *
 * A write puts generation g+1 into slot (g+1) mod 2 with one pwrite (on the calling thread)
 * and one fdatasync (on the thread pool) on a descriptor kept open: the file never changes size, so no directory or inode update is
 * needed for durability. A crash mid-write can tear only the slot being written; its
 * checksum then fails and the read takes the other slot, the previous anchor — exactly
 * what a crash before the old write-temp-fsync-rename-fsync-directory sequence finished
 * left (the committer resumes from an anchor that is behind the store: spec §13.4). That
 * sequence cost two fsyncs, four opens/closes and a rename per group commit (~0.9 ms of
 * CPU and ~10 ms here); this one costs one fdatasync (~0.15 ms, ~2 ms).
 *
 * The checksum catches torn writes, not forgery (a keyed MAC would not help: the key
 * file sits next to it). A file of at most 256 bytes is the earlier format — the bare
 * anchor value — read as is and replaced by the slotted format on the next write (that
 * one write goes through a temporary file and a rename, as before).
 */
import { createHash } from 'node:crypto';
import { fdatasync, promises as fsp, readFileSync, readSync, writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ANCHOR_MAX_BYTES, ANCHOR_VALUES_REMEMBERED, PlatformError } from '../core/platform.js';

const MAGIC = Buffer.from('CFANCHR1', 'latin1');
const SLOT = 512;
const FILE_BYTES = 2 * SLOT;
const SUM_AT = SLOT - 32;
const VALUE_AT = 8 + 8 + 2;

interface Slot {
  readonly generation: bigint;
  readonly value: Uint8Array;
}

/** The slot's content, or null when it is empty, torn or not a slot. */
function parseSlot(b: Buffer): Slot | null {
  if (!b.subarray(0, 8).equals(MAGIC)) return null;
  const sum = createHash('sha256').update(b.subarray(0, SUM_AT)).digest();
  if (!sum.equals(b.subarray(SUM_AT, SLOT))) return null;
  const length = b.readUInt16BE(16);
  if (length > ANCHOR_MAX_BYTES) return null;
  return { generation: b.readBigUInt64BE(8), value: Uint8Array.from(b.subarray(VALUE_AT, VALUE_AT + length)) };
}

function encodeSlot(generation: bigint, value: Uint8Array): Buffer {
  const b = Buffer.alloc(SLOT);
  MAGIC.copy(b, 0);
  b.writeBigUInt64BE(generation, 8);
  b.writeUInt16BE(value.length, 16);
  b.set(value, VALUE_AT);
  createHash('sha256').update(b.subarray(0, SUM_AT)).digest().copy(b, SUM_AT);
  return b;
}

/** The newer intact slot of the two in `bytes` (the whole file), or null when neither is. */
function newestSlot(bytes: Buffer): Slot | null {
  const a = parseSlot(bytes.subarray(0, SLOT));
  const b = parseSlot(bytes.subarray(SLOT));
  return a && b ? (a.generation > b.generation ? a : b) : (a ?? b);
}

function stateValue(s: ReturnType<typeof readState>): Uint8Array | null {
  return s.kind === 'none' ? null : s.kind === 'legacy' ? s.value : s.newest.value;
}

/** What the file holds: the newest intact slot, a legacy bare value, or nothing. */
function readState(path: string): { kind: 'none' } | { kind: 'legacy'; value: Uint8Array } | { kind: 'slots'; newest: Slot } {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
    throw new PlatformError(`software anchor ${path} cannot be read: ${(err as Error).message}`, 'hsm-failure');
  }
  if (bytes.length <= ANCHOR_MAX_BYTES) return { kind: 'legacy', value: new Uint8Array(bytes) };
  if (bytes.length !== FILE_BYTES) throw new PlatformError(`software anchor ${path}: ${bytes.length} bytes, not an anchor file`, 'hsm-failure');
  const newest = newestSlot(bytes);
  if (!newest) throw new PlatformError(`software anchor ${path}: neither slot is intact`, 'hsm-failure');
  return { kind: 'slots', newest };
}

/** One anchor file; writes are serialized. */
export class SoftwareAnchor {
  #fd: FileHandle | null = null;
  /** The generation on disk when `#fd` is open. */
  #generation = 0n;
  #chain: Promise<unknown> = Promise.resolve();
  /**
   * The value this process last read or wrote (after a write that failed midway, either
   * the one before or the one attempted; null: no anchor). A write goes ahead only while
   * the file's newest value is one of them (Platform.writeAnchor, `anchor-moved`). Null
   * until the first read or write.
   */
  #expected: (Uint8Array | null)[] | null = null;

  constructor(readonly path: string) {}

  /** The newest anchor value, or null before the first write. Re-reads the file (resume). */
  async read(): Promise<Uint8Array | null> {
    return this.#serial(async () => {
      await this.#drop(); // a later write starts from what the file says now
      const value = stateValue(readState(this.path));
      this.#expected = [value];
      return value === null ? null : Uint8Array.from(value);
    });
  }

  /** Stores `value`; resolves once it is durable (fdatasync). */
  write(value: Uint8Array): Promise<void> {
    if (value.length > ANCHOR_MAX_BYTES) return Promise.reject(new PlatformError(`anchor: ${value.length} bytes exceeds ${ANCHOR_MAX_BYTES}`, 'bad-argument'));
    const v = Uint8Array.from(value); // the caller may reuse its buffer
    return this.#serial(async () => {
      const expected = this.#expected;
      try {
        if (this.#fd === null) await this.#openOrCreate(v, expected);
        else await this.#writeSlot(v, expected);
        this.#expected = [v];
      } catch (err) {
        await this.#drop(); // the next write re-reads the file
        if (err instanceof PlatformError && err.code === 'anchor-moved') throw err; // nothing written
        if (expected !== null) this.#expected = [...expected, v].slice(-ANCHOR_VALUES_REMEMBERED); // the file may hold either
        if (err instanceof PlatformError) throw err;
        throw new PlatformError(`software anchor ${this.path} cannot be written: ${(err as Error).message}`, 'hsm-failure');
      }
    });
  }

  /** The file's newest value must be one this process expects (another process writing it: `anchor-moved`). */
  #checkExpected(current: Uint8Array | null, expected: readonly (Uint8Array | null)[] | null): void {
    if (expected === null) return;
    if (expected.some((e) => (e === null ? current === null : current !== null && Buffer.from(e).equals(current)))) return;
    throw new PlatformError(`software anchor ${this.path} is not the one this process last read or wrote: another process writes it (a second vault on this key folder?); refusing to write over it`, 'anchor-moved');
  }

  /** Closes the descriptor (after pending writes). */
  close(): Promise<void> {
    return this.#serial(() => this.#drop());
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn, fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  async #drop(): Promise<void> {
    const fd = this.#fd;
    this.#fd = null;
    if (fd) await fd.close().catch(() => undefined);
  }

  async #writeSlot(value: Uint8Array, expected: readonly (Uint8Array | null)[] | null): Promise<void> {
    const g = this.#generation + 1n;
    const slot = encodeSlot(g, value);
    const fd = this.#fd!.fd;
    if (expected !== null) {
      // One pread of both slots (microseconds): the newest must still be this process's.
      const both = Buffer.alloc(FILE_BYTES);
      const n = readSync(fd, both, 0, FILE_BYTES, 0);
      const current = n === FILE_BYTES ? newestSlot(both) : null;
      if (current === null || current.generation !== this.#generation) this.#checkExpected(current?.value ?? null, []);
      else this.#checkExpected(current.value, expected);
    }
    // The 512-byte pwrite goes to the page cache at once (microseconds): written here, not on
    // the thread pool, so a group commit's anchor costs one thread-pool round trip (the
    // fdatasync), not two plus FileHandle promises (issue 13: each round trip wakes a pool
    // thread, on the vault's core).
    const bytesWritten = writeSync(fd, slot, 0, SLOT, Number(g % 2n) * SLOT);
    if (bytesWritten !== SLOT) throw new Error(`short write (${bytesWritten} of ${SLOT} bytes)`);
    await new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
    this.#generation = g;
  }

  /** First write of this process: continue the slotted file, or make one (temp file, rename, directory fsync). */
  async #openOrCreate(value: Uint8Array, expected: readonly (Uint8Array | null)[] | null): Promise<void> {
    const s = readState(this.path);
    this.#checkExpected(stateValue(s), expected);
    if (s.kind === 'slots') {
      this.#fd = await fsp.open(this.path, 'r+');
      this.#generation = s.newest.generation;
      await this.#writeSlot(value, null);
      return;
    }
    const tmp = `${this.path}.tmp`;
    // Generation g lives in slot g mod 2: generation 1 in slot 1; slot 0 stays zero (not a slot).
    const body = Buffer.alloc(FILE_BYTES);
    encodeSlot(1n, value).copy(body, SLOT);
    const f = await fsp.open(tmp, 'w', 0o600);
    try {
      await f.writeFile(body);
      await f.sync();
    } finally {
      await f.close();
    }
    await fsp.rename(tmp, this.path);
    const dir = await fsp.open(dirname(this.path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    this.#fd = await fsp.open(this.path, 'r+');
    this.#generation = 1n;
  }
}
