/**
 * FastCDC's byte loop (fastcdc.ts) as a WebAssembly function: the same gear hash, the same
 * masks, the same cut points, about 2.2 times as fast as the JavaScript loop it replaced
 * (issue 13: 256 MiB of random bytes chunked in 71–76 ms against 162–164 ms, one core).
 *
 * The module is written out below instruction by instruction (no toolchain, nothing
 * downloaded): one exported function `scan` and a mutable global `h` (the hash carried
 * from one call to the next). Memory is two 64 KiB pages owned by one GearLoop: the 256
 * gear values at byte 0 (little-endian i32), then a window of up to PIECE bytes of the
 * data at byte WINDOW, copied in piece by piece (memcpy is ~10× faster than the hash, so
 * the copy costs a few percent; reading files straight into this memory would save it
 * but tie every reader to one chunker).
 *
 *   scan(p, normalEnd, limitEnd, maskS, maskL) -> i32
 *     h := global h
 *     while p < normalEnd: h := (h << 1) + gear[mem[p]]; if (h & maskS) == 0: global h := h; return p + 1
 *     while p < limitEnd:  h := (h << 1) + gear[mem[p]]; if (h & maskL) == 0: global h := h; return p + 1
 *     global h := h; return -1
 *
 * i32 arithmetic wraps, as `| 0` does in JavaScript, so every value matches spec §6.1.
 */

/** Bytes of data per call. */
export const PIECE = 64 * 1024;
/** Where the data window starts in the module's memory (after the 1,024-byte gear table). */
const WINDOW = 1024;

const I32 = 0x7f;
const op = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  return: 0x0f,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  globalGet: 0x23,
  globalSet: 0x24,
  i32Load: 0x28,
  i32Load8U: 0x2d,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32And: 0x71,
  i32Shl: 0x74,
  void: 0x40, // a block with no result
} as const;
// scan's locals: its five parameters, then h.
const P = 0;
const NORMAL_END = 1;
const LIMIT_END = 2;
const MASK_S = 3;
const MASK_L = 4;
const H = 5;

/** One of the two loops: hash bytes from p up to `endLocal`, cut where `(h & maskLocal) == 0`. */
function hashLoop(endLocal: number, maskLocal: number): number[] {
  return [
    op.block, op.void,
    op.loop, op.void,
    op.localGet, P, op.localGet, endLocal, op.i32GeU, op.brIf, 1, // p >= end: leave the block
    op.localGet, H, op.i32Const, 1, op.i32Shl, // h << 1
    op.localGet, P, op.i32Load8U, 0, 0, op.i32Const, 2, op.i32Shl, op.i32Load, 2, 0, // gear[mem[p]] (table at 0)
    op.i32Add, op.localTee, H, // h := (h << 1) + gear[mem[p]]
    op.localGet, maskLocal, op.i32And, op.i32Eqz,
    op.if, op.void, // a cut point: store h, return p + 1
    op.localGet, H, op.globalSet, 0,
    op.localGet, P, op.i32Const, 1, op.i32Add, op.return,
    op.end,
    op.localGet, P, op.i32Const, 1, op.i32Add, op.localSet, P, // p += 1
    op.br, 0, // next byte
    op.end,
    op.end,
  ];
}

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}
const name = (s: string) => [...uleb(s.length), ...Buffer.from(s, 'latin1')];
const section = (id: number, bytes: number[]) => [id, ...uleb(bytes.length), ...bytes];

function moduleBytes(): Uint8Array {
  const body = [
    1, 1, I32, // one local: h
    op.globalGet, 0, op.localSet, H,
    ...hashLoop(NORMAL_END, MASK_S),
    ...hashLoop(LIMIT_END, MASK_L),
    op.localGet, H, op.globalSet, 0,
    op.i32Const, 0x7f, // -1 (signed LEB128)
    op.end,
  ];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0, // "\0asm", version 1
    ...section(1, [1, 0x60, 5, I32, I32, I32, I32, I32, 1, I32]), // type 0: (i32 × 5) -> i32
    ...section(2, [1, ...name('e'), ...name('m'), 0x02, 0x00, 2]), // import memory e.m, at least 2 pages
    ...section(3, [1, 0]), // function 0 has type 0
    ...section(6, [1, I32, 1, op.i32Const, 0, op.end]), // global 0: mutable i32 = 0
    ...section(7, [2, ...name('scan'), 0x00, 0, ...name('h'), 0x03, 0]), // exports: scan, h
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}

type Scan = (p: number, normalEnd: number, limitEnd: number, maskS: number, maskL: number) => number;
/** What this file uses of the WebAssembly global (its types are in lib.dom, not in this project's libs). */
interface Wasm {
  Module: new (bytes: Uint8Array) => object;
  Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer };
  Instance: new (m: object, imports: object) => { exports: { scan: Scan; h: { value: number } } };
}
const wasm = (globalThis as unknown as { WebAssembly?: Wasm }).WebAssembly;
let compiled: object | undefined;

/** The byte loop of one chunker: `find` as below. */
export interface GearLoop {
  /**
   * Rolls the hash from 0 over data[from, limitEnd), testing maskS before normalEnd and
   * maskL from there; returns the index just past the first cut point, or -1.
   */
  find(data: Uint8Array, from: number, normalEnd: number, limitEnd: number, maskS: number, maskL: number): number;
}

/** Tests only: `true` makes newGearLoop give the JavaScript loop, as where WebAssembly is missing. */
export const gearLoopForTesting = { javascript: false };

/** Set once a WebAssembly memory could not be made in this thread: the JavaScript loop from then on. */
let wasmFailed = false;

/**
 * The WebAssembly loop, or the same loop in JavaScript where WebAssembly is missing (Node
 * run with --jitless, some sandboxes) or its memory cannot be made: backups then run at
 * the old speed, not fail. Each WebAssembly memory reserves gigabytes of address space
 * (V8's guard regions), so under a limit on virtual memory (`ulimit -v`, even 12 GiB)
 * `new WebAssembly.Memory` throws RangeError; that surfaced as every file "cannot read"
 * and a snapshot saved without their contents (exit 3).
 */
export function newGearLoop(gear: Int32Array): GearLoop {
  if (wasm && !gearLoopForTesting.javascript && !wasmFailed) {
    try {
      return new WasmGearLoop(gear);
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      wasmFailed = true;
    }
  }
  return new JsGearLoop(gear);
}

/** spec §6.1's loop as written there, in JavaScript. */
class JsGearLoop implements GearLoop {
  constructor(private readonly gear: Int32Array) {}
  find(data: Uint8Array, from: number, normalEnd: number, limitEnd: number, maskS: number, maskL: number): number {
    const gear = this.gear;
    let h = 0;
    let i = from;
    for (; i < normalEnd; i++) {
      h = ((h << 1) + gear[data[i]!]!) | 0;
      if ((h & maskS) === 0) return i + 1;
    }
    for (; i < limitEnd; i++) {
      h = ((h << 1) + gear[data[i]!]!) | 0;
      if ((h & maskL) === 0) return i + 1;
    }
    return -1;
  }
}

/** One chunker's gear table and window (not shared between chunkers: it holds state). */
class WasmGearLoop implements GearLoop {
  readonly #mem: Uint8Array;
  readonly #scan: Scan;
  readonly #h: { value: number };

  /** @param gear the 256 gear values */
  constructor(gear: Int32Array) {
    const w = wasm!;
    compiled ??= new w.Module(moduleBytes());
    const memory = new w.Memory({ initial: 2, maximum: 2 });
    const instance = new w.Instance(compiled, { e: { m: memory } });
    this.#scan = instance.exports.scan;
    this.#h = instance.exports.h;
    this.#mem = new Uint8Array(memory.buffer);
    const table = new DataView(memory.buffer, 0, 1024);
    for (let i = 0; i < 256; i++) table.setInt32(i * 4, gear[i]!, true);
  }

  find(data: Uint8Array, from: number, normalEnd: number, limitEnd: number, maskS: number, maskL: number): number {
    this.#h.value = 0;
    for (let at = from; at < limitEnd; at += PIECE) {
      const n = Math.min(PIECE, limitEnd - at);
      this.#mem.set(data.subarray(at, at + n), WINDOW);
      const ne = Math.min(n, Math.max(0, normalEnd - at));
      const r = this.#scan(WINDOW, WINDOW + ne, WINDOW + n, maskS, maskL);
      if (r >= 0) return at + (r - WINDOW);
    }
    return -1;
  }
}
