/** FastCDC with a keyed gear table (spec §6.1). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createHash } from 'node:crypto';
import { FastCdc, validateChunkerParams, type ChunkerParams } from '../src/chunker/fastcdc.js';
import { BackupKey } from '../src/crypto/backup-key.js';
import { RepositoryKeys } from '../src/crypto/repository-keys.js';
import { bytes } from './helpers.js';

const gear = (seed: number, repo = 1) => new RepositoryKeys(BackupKey.fromBytes(bytes(32, seed)), bytes(16, repo)).gearTable;
const SMALL: ChunkerParams = { minSize: 2048, avgSize: 8192, maxSize: 32768 };
const data = bytes(4 << 20, 42);

function cuts(cdc: FastCdc, d: Uint8Array): number[] {
  const out: number[] = [];
  for (let s = 0; s < d.length; ) {
    const n = cdc.cut(d, s, d.length, true);
    out.push(n);
    s += n;
  }
  return out;
}

/** Feeds `d` in pieces like a file reader, asking for more when cut() says -1. */
function streamedCuts(cdc: FastCdc, d: Uint8Array, piece: number): number[] {
  const out: number[] = [];
  let start = 0;
  let end = 0;
  while (start < d.length) {
    const eof = end === d.length;
    const n = cdc.cut(d, start, end, eof);
    if (n > 0) {
      out.push(n);
      start += n;
    } else end = Math.min(d.length, end + piece);
  }
  return out;
}

const hashes = (d: Uint8Array, ls: number[]) => {
  let o = 0;
  return ls.map((l) => createHash('sha256').update(d.subarray(o, (o += l))).digest('hex'));
};

test('every chunk but the last is within [min, max]; the lengths add up', () => {
  for (const p of [SMALL, { minSize: 64, avgSize: 1024, maxSize: 4096 }, { minSize: 512 * 1024, avgSize: 1 << 20, maxSize: 8 << 20 }]) {
    const ls = cuts(new FastCdc(gear(1), p), data);
    assert.equal(ls.reduce((a, b) => a + b, 0), data.length);
    ls.slice(0, -1).forEach((l) => assert.ok(l >= p.minSize && l <= p.maxSize, `${l} outside ${p.minSize}..${p.maxSize}`));
    assert.ok(ls.at(-1)! <= p.maxSize);
  }
});

test('the average is near avgSize', () => {
  const ls = cuts(new FastCdc(gear(1), SMALL), data);
  const avg = data.length / ls.length;
  assert.ok(avg > SMALL.avgSize * 0.6 && avg < SMALL.avgSize * 1.6, `average ${avg}`);
});

test('data without cut points is cut at maxSize', () => {
  const ls = cuts(new FastCdc(gear(1), SMALL), new Uint8Array(100_000));
  assert.deepEqual(ls, [32768, 32768, 32768, 100_000 - 3 * 32768]);
});

test('deterministic, and the same whether fed whole or in pieces of any size', () => {
  const cdc = new FastCdc(gear(1), SMALL);
  const whole = cuts(cdc, data);
  assert.deepEqual(cuts(new FastCdc(gear(1), SMALL), data), whole);
  for (const piece of [1000, 4096, 65537]) assert.deepEqual(streamedCuts(cdc, data.subarray(0, 1 << 20), piece), cuts(cdc, data.subarray(0, 1 << 20)), `piece ${piece}`);
});

test('shift-resistant: bytes inserted at the front change only the first few chunks', () => {
  const cdc = new FastCdc(gear(1), SMALL);
  const before = hashes(data, cuts(cdc, data));
  const shifted = Buffer.concat([bytes(100, 7), data]);
  const after = hashes(shifted, cuts(cdc, shifted));
  const known = new Set(before);
  const changed = after.filter((h) => !known.has(h)).length;
  assert.ok(changed <= 3, `${changed} of ${after.length} chunks changed`);
});

test('an edit in the middle changes only the chunks around it', () => {
  const cdc = new FastCdc(gear(1), SMALL);
  const edited = Buffer.from(data);
  edited[2 << 20]! ^= 0xff;
  const known = new Set(hashes(data, cuts(cdc, data)));
  const changed = hashes(edited, cuts(cdc, edited)).filter((h) => !known.has(h)).length;
  assert.ok(changed >= 1 && changed <= 3, `${changed} chunks changed`);
});

test('another key, or another repository under one key, cuts elsewhere', () => {
  const base = cuts(new FastCdc(gear(1), SMALL), data);
  for (const g of [gear(2), gear(1, 2)]) {
    const other = cuts(new FastCdc(g, SMALL), data);
    let pos = 0;
    const a = new Set(base.map((l) => (pos += l)));
    pos = 0;
    const shared = other.filter((l) => a.has((pos += l))).length;
    assert.ok(shared < other.length * 0.2, `${shared} of ${other.length} cut points shared`);
  }
});

test('parameters and gear table are checked', () => {
  assert.throws(() => new FastCdc(new Uint8Array(1023)), RangeError);
  for (const p of [
    { minSize: 2048, avgSize: 8000, maxSize: 32768 },
    { minSize: 2048, avgSize: 512, maxSize: 32768 },
    { minSize: 16384, avgSize: 8192, maxSize: 32768 },
    { minSize: 32, avgSize: 8192, maxSize: 32768 },
    { minSize: 2048, avgSize: 8192, maxSize: 4096 },
    { minSize: 2048, avgSize: 8192, maxSize: 2 ** 29 },
  ]) assert.throws(() => validateChunkerParams(p), RangeError, JSON.stringify(p));
});
