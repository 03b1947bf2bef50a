/**
 * FastCDC's byte loop runs as WebAssembly (chunker/gear-loop.ts, issue 13), over the data
 * copied into the module's memory 64 KiB at a time. Its cut points must be the spec's
 * (§6.1) exactly: checked against a plain reimplementation on random data, for chunks
 * found inside the first piece, in later pieces, across the change of mask at the
 * average size (inside a piece and on a piece's edge), at maxSize without a cut point,
 * with more bytes to come (-1) and at the end of the data, from views with offsets; the
 * JavaScript loop used where WebAssembly is missing (node --jitless) the same way.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { FastCdc, type ChunkerParams } from '../src/chunker/fastcdc.js';
import { PIECE, gearLoopForTesting } from '../src/chunker/gear-loop.js';
import { bytes, prng } from './helpers.js';
import { referenceCut } from './reference-cut.js';

const P_SMALL: ChunkerParams = { minSize: 4096, avgSize: 65_536, maxSize: 262_144 };
const params: ChunkerParams[] = [
  { minSize: 64, avgSize: 1024, maxSize: 4096 }, // many cuts inside one piece
  { minSize: 100_000, avgSize: 131_072, maxSize: 400_000 }, // the mask changes inside a piece
  { minSize: 65_536, avgSize: 131_072, maxSize: 1 << 20 }, // ...on the first piece's edge
  { minSize: 256 * 1024, avgSize: 512 * 1024, maxSize: 2 * 1024 * 1024 }, // the defaults
  { minSize: 64, avgSize: 1 << 22, maxSize: 1 << 24 }, // cuts many pieces in
];

for (const javascript of [false, true]) {
  test(`the ${javascript ? 'JavaScript' : 'WebAssembly'} gear loop cuts where the spec does: every piece, both masks, maxSize, -1, views with offsets`, () => {
    gearLoopForTesting.javascript = javascript;
    try {
      cutsLikeTheSpec();
    } finally {
      gearLoopForTesting.javascript = false;
    }
  });
}

function cutsLikeTheSpec(): void {
  let afterFirstPiece = 0;
  let atMax = 0;
  let needMore = 0;
  for (const [k, p] of params.entries()) {
    for (const seed of [1, 2]) {
      const gb = bytes(1024, 1000 * k + seed);
      const cdc = new FastCdc(gb, p);
      const n = Math.min(3 * p.maxSize + 12_345, 24 << 20);
      // A prefix so the data is a view at an odd offset into a larger buffer.
      const whole = bytes(n + 7, 77 * k + seed);
      const data = new Uint8Array(whole.buffer, whole.byteOffset + 7, n);
      const rnd = prng(seed * 31 + k);
      // Walk the data chunk by chunk (whole), and cut at random ends too (streamed).
      for (let s = 0; s < n; ) {
        const expect = referenceCut(gb, p, data, s, n, true);
        assert.equal(cdc.cut(data, s, n, true), expect, `params ${k}, seed ${seed}, start ${s}`);
        if (expect > p.minSize + PIECE) afterFirstPiece++;
        if (expect === p.maxSize) atMax++;
        const short = Math.min(n, s + Math.floor(rnd() * (p.maxSize + 1)));
        for (const eof of [false, true]) {
          const r = cdc.cut(data, s, short, eof);
          assert.equal(r, referenceCut(gb, p, data, s, short, eof), `params ${k}, seed ${seed}, start ${s}, end ${short}, eof ${eof}`);
          if (r === -1) needMore++;
        }
        s += expect;
      }
    }
  }
  assert.ok(afterFirstPiece > 0 && needMore > 0, `cuts after the first piece: ${afterFirstPiece}, -1 answers: ${needMore}`);
  // No cut point anywhere: with gear[9] = 0x80000000, h = 2h + 0x80000000 stays 0x80000000
  // (the top bit, in every mask) over a run of 9s, so every chunk is cut at maxSize.
  const gb = new Uint8Array(1024);
  new DataView(gb.buffer).setInt32(4 * 9, -0x80000000, true);
  for (const p of params) {
    const cdc = new FastCdc(gb, p);
    const nines = new Uint8Array(p.maxSize + 5).fill(9);
    assert.equal(cdc.cut(nines, 0, nines.length, false), p.maxSize);
    assert.equal(cdc.cut(nines, 5, nines.length, false), p.maxSize);
    assert.equal(cdc.cut(nines, 6, nines.length, false), -1);
    assert.equal(cdc.cut(nines, 6, nines.length, true), p.maxSize - 1);
    atMax++;
  }
  assert.ok(atMax > 0);
}

test('where WebAssembly is missing (node --jitless) chunking still works, with the same cut points', () => {
  // The gear table and the data go to the child on stdin; it answers with its cut lengths.
  const gear = bytes(1024, 41);
  const data = bytes(3 << 20, 42);
  const script = `
    import { readFileSync } from 'node:fs';
    import { FastCdc } from ${JSON.stringify(new URL('../src/chunker/fastcdc.js', import.meta.url).href)};
    const input = readFileSync(0);
    const data = input.subarray(1024);
    const cdc = new FastCdc(input.subarray(0, 1024), ${JSON.stringify(P_SMALL)});
    const cuts = [];
    for (let s = 0; s < data.length; ) { const n = cdc.cut(data, s, data.length, true); cuts.push(n); s += n; }
    console.log(JSON.stringify({ wasm: typeof WebAssembly, cuts }));`;
  const r = spawnSync(process.execPath, ['--jitless', '--no-warnings', '--input-type=module', '-e', script], { input: Buffer.concat([gear, data]), encoding: 'utf8', maxBuffer: 1 << 24 });
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { wasm: string; cuts: number[] };
  assert.equal(got.wasm, 'undefined', 'the child runs without WebAssembly');
  const expect: number[] = [];
  for (let s = 0; s < data.length; ) {
    const n = referenceCut(gear, P_SMALL, data, s, data.length, true);
    expect.push(n);
    s += n;
  }
  assert.ok(expect.length > 20, `${expect.length} chunks`);
  assert.deepEqual(got.cuts, expect);
});

test('two chunkers with different gear tables in one thread keep their own tables and state', () => {
  const p: ChunkerParams = { minSize: 64, avgSize: 4096, maxSize: 1 << 17 };
  const ga = bytes(1024, 5);
  const gb = bytes(1024, 6);
  const a = new FastCdc(ga, p);
  const b = new FastCdc(gb, p);
  const data = bytes(1 << 20, 9);
  for (let s = 0; s < data.length - p.maxSize; s += 9_999) {
    // Interleaved calls, a streamed call of one between the other's.
    assert.equal(a.cut(data, s, data.length, true), referenceCut(ga, p, data, s, data.length, true));
    assert.equal(b.cut(data, s, s + 70_000, false), referenceCut(gb, p, data, s, s + 70_000, false));
    assert.equal(a.cut(data, s, s + 70_000, false), referenceCut(ga, p, data, s, s + 70_000, false));
  }
});
test("the hash carries over from one piece to the next: a cut point made by the previous piece's last byte", () => {
  // gear[9] = 0x80000000 holds h at 0x80000000 (no cut); gear[7] = 0x60000000 then makes
  // h = 0x60000000 on the piece's last byte; on the next piece's first byte, gear[5] =
  // 0x40000000 gives (0x60000000 << 1) + 0x40000000 = 0 (mod 2^32): a cut. Restarting the
  // hash at the piece's edge would give 0x40000000 there, no cut.
  const gb = new Uint8Array(1024);
  const dv = new DataView(gb.buffer);
  dv.setInt32(4 * 9, -0x80000000, true);
  dv.setInt32(4 * 7, 0x60000000, true);
  dv.setInt32(4 * 5, 0x40000000, true);
  const p: ChunkerParams = { minSize: 64, avgSize: 1 << 20, maxSize: 1 << 22 };
  for (const edge of [1, 2, 3]) {
    const data = new Uint8Array(p.minSize + edge * PIECE + 1000).fill(9);
    data[p.minSize + edge * PIECE - 1] = 7;
    data[p.minSize + edge * PIECE] = 5;
    const expect = p.minSize + edge * PIECE + 1;
    assert.equal(referenceCut(gb, p, data, 0, data.length, true), expect);
    assert.equal(new FastCdc(gb, p).cut(data, 0, data.length, true), expect, `edge of piece ${edge}`);
  }
});

// Last in this file: a failed WebAssembly memory makes this thread use the JavaScript loop from then on.
test('a WebAssembly memory that cannot be made (ulimit -v) gives the JavaScript loop, not a failed chunker', () => {
  const w = (globalThis as unknown as { WebAssembly: { Memory: unknown } }).WebAssembly;
  const real = w.Memory;
  let tried = 0;
  w.Memory = function (): never {
    tried++;
    throw new RangeError('WebAssembly.Memory(): could not allocate memory');
  };
  try {
    const gb = bytes(1024, 5);
    const p = params[3]!;
    const data = bytes(3 << 20, 6);
    const cdc = new FastCdc(gb, p);
    for (let s = 0; s < data.length; ) {
      const expect = referenceCut(gb, p, data, s, data.length, true);
      assert.equal(cdc.cut(data, s, data.length, true), expect);
      s += expect;
    }
    assert.equal(new FastCdc(gb, p).cut(data, 0, data.length, true), referenceCut(gb, p, data, 0, data.length, true));
    assert.equal(tried, 1, 'tried once, then the JavaScript loop');
  } finally {
    w.Memory = real;
  }
});
