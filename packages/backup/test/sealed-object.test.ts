/**
 * Sealed objects (spec/backup-format.md §5): every row of TESTING.md "Sealed objects
 * and repositories" that concerns one object.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  HEADER_BYTES,
  ObjectKind,
  ObjectOpener,
  ObjectSealer,
  SEGMENT_BYTES,
  TAG_BYTES,
  decodeHeader,
  encodeHeader,
  openObject,
  openRange,
  plainLength,
  sealObject,
  sealedLength,
  segmentRange,
  type ObjectHeader,
} from '../src/crypto/sealed-object.js';
import { CofferError, DecryptionError } from '../src/errors.js';
import { bytes } from './helpers.js';
import { rawSeal } from './vectors/generate.js';

const S = SEGMENT_BYTES;
const FULL = S + TAG_BYTES;
const M1 = bytes(32, 11); // object master of "repository 1"
const M2 = bytes(32, 12); // another repository's
const id = (n: number) => Buffer.alloc(32, n);
const A: ObjectHeader = { kind: ObjectKind.Pack, id: id(0xaa) };
const B: ObjectHeader = { kind: ObjectKind.Pack, id: id(0xbb) };

function sealStream(master: Uint8Array, h: ObjectHeader, plain: Uint8Array, step: number): Buffer {
  const s = new ObjectSealer(master, h);
  const parts: Buffer[] = [Buffer.from(s.header)];
  for (let i = 0; i < plain.length; i += step) parts.push(...s.update(plain.subarray(i, i + step)));
  parts.push(...s.final());
  return Buffer.concat(parts);
}

function openStream(master: Uint8Array, h: ObjectHeader, sealed: Uint8Array, step: number): Buffer {
  const o = new ObjectOpener(master, h);
  const parts: Buffer[] = [];
  for (let i = 0; i < sealed.length; i += step) parts.push(...o.update(sealed.subarray(i, i + step)));
  parts.push(...o.final());
  return Buffer.concat(parts);
}

/** The outcome of opening `sealed` both ways; the two must agree. */
function failure(sealed: Uint8Array, h: ObjectHeader = A, master: Uint8Array = M1): 'header' | 'version' | 'payload' | 'ok' {
  const kind = (fn: () => unknown) => {
    try {
      fn();
      return 'ok' as const;
    } catch (e) {
      if (e instanceof DecryptionError) return 'payload' as const;
      if (CofferError.is(e, 'corrupt')) return 'header' as const;
      if (CofferError.is(e, 'unsupported-version')) return 'version' as const;
      throw e;
    }
  };
  const whole = kind(() => openObject(master, h, sealed));
  const streamed = kind(() => openStream(master, h, sealed, 4099));
  assert.equal(streamed, whole, 'openObject and ObjectOpener agree');
  return whole;
}

const segmentsOf = (sealed: Buffer) => {
  const segs: Buffer[] = [];
  for (let o = HEADER_BYTES; o < sealed.length; o += FULL) segs.push(sealed.subarray(o, Math.min(o + FULL, sealed.length)));
  return segs;
};

describe('round trips', () => {
  const lengths = [0, 1, S - 1, S, S + 1, 2 * S - 1, 2 * S + 1];
  const steps = [1, 7, S, 3 * S + 5];
  for (const n of lengths) {
    test(`length ${n}: every write step × every read step, openObject, sealedLength`, () => {
      const plain = bytes(n, n + 1);
      const sealed = sealObject(M1, A, plain);
      assert.equal(sealed.length, sealedLength(n));
      assert.equal(plainLength(sealed.length), n);
      assert.ok(openObject(M1, A, sealed).equals(plain));
      for (const w of steps) {
        assert.ok(sealStream(M1, A, plain, w).equals(sealed), `write step ${w} gives the same bytes`);
      }
      for (const r of steps) assert.ok(openStream(M1, A, sealed, r).equals(plain), `read step ${r}`);
    });
  }

  test('257·S bytes, written in steps of 3S+5 and read in steps of S and whole', () => {
    const plain = bytes(257 * S, 257);
    const sealed = sealStream(M1, A, plain, 3 * S + 5);
    assert.equal(sealed.length, sealedLength(plain.length));
    assert.equal(segmentsOf(sealed).length, 257);
    assert.ok(openStream(M1, A, sealed, S).equals(plain));
    assert.ok(openObject(M1, A, sealed).equals(plain));
  });

  test('the sealer copies its input: a reused caller buffer does not change the output', () => {
    const plain = bytes(S + 100, 3);
    const s = new ObjectSealer(M1, A);
    const parts: Buffer[] = [Buffer.from(s.header)];
    const scratch = Buffer.alloc(50);
    for (let i = 0; i < plain.length; i += 50) {
      plain.copy(scratch, 0, i, i + 50);
      parts.push(...s.update(scratch.subarray(0, Math.min(50, plain.length - i))));
      scratch.fill(0xee);
    }
    parts.push(...s.final());
    assert.ok(Buffer.concat(parts).equals(sealObject(M1, A, plain)));
  });

  test('property: any length, write step and read step round-trip', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 3 * S + 17 }), fc.integer({ min: 1, max: S + 40 }), fc.integer({ min: 1, max: S + 40 }), fc.integer(), (n, w, r, seed) => {
        const plain = bytes(n, seed);
        const sealed = sealStream(M1, A, plain, w);
        assert.ok(sealed.equals(sealObject(M1, A, plain)));
        assert.ok(openStream(M1, A, sealed, r).equals(plain));
      }),
      { numRuns: 40 },
    );
  });

  test('property: plainLength inverts sealedLength and rejects every other length', () => {
    const valid = new Set<number>();
    for (let n = 0; n <= 3 * S + 3; n++) valid.add(sealedLength(n));
    for (let len = 0; len <= sealedLength(3 * S + 3); len++) {
      if (valid.has(len)) assert.equal(sealedLength(plainLength(len)), len);
      else assert.throws(() => plainLength(len), (e) => CofferError.is(e, 'corrupt'));
    }
  });
});

describe('random access: segmentRange + openRange', () => {
  const plain = bytes(3 * S + 100, 5);
  const sealed = sealObject(M1, A, plain);
  const header = sealed.subarray(0, HEADER_BYTES);
  const read = (offset: number, length: number) => {
    const r = segmentRange(sealed.length, offset, length);
    return openRange(M1, header, r, sealed.subarray(r.sealedOffset, r.sealedOffset + r.sealedLength), length);
  };

  test('every boundary-straddling range returns exactly its bytes', () => {
    const points = [0, 1, S - 1, S, S + 1, 2 * S - 1, 2 * S, 3 * S - 1, 3 * S, 3 * S + 99];
    for (const off of points) {
      for (const len of [0, 1, 2, 17, S - 1, S, S + 1, 2 * S + 3]) {
        if (off + len > plain.length) continue;
        assert.ok(read(off, len).equals(plain.subarray(off, off + len)), `${off}+${len}`);
      }
    }
  });

  test('property: random ranges', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: plain.length }), fc.integer({ min: 0, max: plain.length }), (a, b) => {
        const [off, end] = a <= b ? [a, b] : [b, a];
        assert.ok(read(off, end - off).equals(plain.subarray(off, end)));
      }),
      { numRuns: 200 },
    );
  });

  test('ranges outside the object, wrong sizes and tampered segments are refused', () => {
    assert.throws(() => segmentRange(sealed.length, plain.length - 1, 2), (e) => CofferError.is(e, 'corrupt'));
    assert.throws(() => segmentRange(sealed.length, -1, 1), (e) => CofferError.is(e, 'corrupt'));
    const r = segmentRange(sealed.length, S + 5, 10);
    const segs = Buffer.from(sealed.subarray(r.sealedOffset, r.sealedOffset + r.sealedLength));
    assert.throws(() => openRange(M1, header, r, segs.subarray(1), 10), (e) => CofferError.is(e, 'corrupt'));
    segs[segs.length - 1]! ^= 1;
    assert.throws(() => openRange(M1, header, r, segs, 10), DecryptionError);
    // The final segment read as non-final (object length lied about) fails.
    const last = segmentRange(sealed.length, 3 * S, 100);
    assert.ok(last.finalIncluded);
    assert.throws(() => openRange(M1, header, { ...last, finalIncluded: false }, sealed.subarray(last.sealedOffset), 100), DecryptionError);
    // Another object's header gives another key.
    const other = encodeHeader(B);
    assert.throws(() => openRange(M1, other, r, sealed.subarray(r.sealedOffset, r.sealedOffset + r.sealedLength), 10), DecryptionError);
  });
});

describe('truncation', () => {
  test('at every byte of a small object', () => {
    const sealed = sealObject(M1, A, bytes(200, 6));
    for (let n = 0; n < sealed.length; n++) {
      assert.equal(failure(sealed.subarray(0, n)), n < HEADER_BYTES ? 'header' : 'payload', `cut at ${n}`);
    }
  });

  test('at every segment boundary (and one byte either side) of a 4-segment object', () => {
    const sealed = sealObject(M1, A, bytes(3 * S + 10, 7));
    for (let k = 0; k <= 3; k++) {
      for (const d of [-1, 0, 1]) {
        const n = HEADER_BYTES + k * FULL + d;
        if (n >= sealed.length || n < HEADER_BYTES) continue;
        assert.equal(failure(sealed.subarray(0, n)), 'payload', `cut at segment ${k}${d >= 0 ? '+' : ''}${d}`);
      }
    }
  });

  test('header only, missing tag, and a segment shorter than a tag', () => {
    const one = sealObject(M1, A, Buffer.from('x'));
    assert.equal(failure(one.subarray(0, HEADER_BYTES)), 'payload');
    assert.equal(failure(one.subarray(0, HEADER_BYTES + 1)), 'payload');
    const big = sealObject(M1, A, bytes(S + 40, 8));
    assert.equal(failure(big.subarray(0, HEADER_BYTES + FULL + TAG_BYTES - 1)), 'payload');
    assert.equal(failure(Buffer.concat([big.subarray(0, HEADER_BYTES + FULL), Buffer.alloc(5)])), 'payload');
  });
});

describe('extension', () => {
  const sealed = sealObject(M1, A, bytes(S + 3, 9));
  test('one byte appended', () => assert.equal(failure(Buffer.concat([sealed, Buffer.of(0)])), 'payload'));
  test('a whole segment appended (a copy of the first)', () => {
    assert.equal(failure(Buffer.concat([sealed, segmentsOf(sealed)[0]!])), 'payload');
  });
  test('a whole final segment of another object appended', () => {
    const other = sealObject(M1, A, bytes(S + 3, 10));
    assert.equal(failure(Buffer.concat([sealed, segmentsOf(other)[1]!])), 'payload');
  });
  test('trailing garbage', () => assert.equal(failure(Buffer.concat([sealed, bytes(1000, 1)])), 'payload'));
  test('a one-segment object of exactly S bytes with a byte appended', () => {
    const full = sealObject(M1, A, bytes(S, 2));
    assert.equal(failure(Buffer.concat([full, Buffer.of(1)])), 'payload');
  });
});

describe('bit flips', () => {
  test('every bit of every byte of a small object: header → header failure, the rest → payload failure', () => {
    const sealed = sealObject(M1, A, bytes(100, 13));
    for (let i = 0; i < sealed.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const c = Buffer.from(sealed);
        c[i]! ^= 1 << bit;
        const want = i >= HEADER_BYTES ? 'payload' : i === 4 ? 'version' : 'header';
        assert.equal(failure(c), want, `byte ${i} bit ${bit}`);
      }
    }
  });

  test('a 3-segment object: every header byte, every tag byte, ciphertext bytes on a stride', () => {
    const sealed = sealObject(M1, A, bytes(2 * S + 1, 14));
    const where: number[] = [];
    for (let i = 0; i < HEADER_BYTES; i++) where.push(i);
    for (let k = 0; k < 3; k++) {
      const segEnd = Math.min(HEADER_BYTES + (k + 1) * FULL, sealed.length);
      for (let i = segEnd - TAG_BYTES; i < segEnd; i++) where.push(i);
      for (let i = HEADER_BYTES + k * FULL; i < segEnd - TAG_BYTES; i += 997) where.push(i);
      where.push(segEnd - TAG_BYTES - 1);
    }
    for (const i of where) {
      const c = Buffer.from(sealed);
      c[i]! ^= 0x10;
      assert.equal(failure(c), i >= HEADER_BYTES ? 'payload' : i === 4 ? 'version' : 'header', `byte ${i}`);
    }
  });
});

describe('segments moved around', () => {
  const plain = bytes(2 * S + 1, 15);
  const sealed = sealObject(M1, A, plain);
  const h = sealed.subarray(0, HEADER_BYTES);
  const [a, b, c] = segmentsOf(sealed) as [Buffer, Buffer, Buffer];
  const cases: Array<[string, Buffer[]]> = [
    ['deleted (A C)', [a, c]],
    ['deleted first (B C)', [b, c]],
    ['duplicated (A A B C)', [a, a, b, c]],
    ['duplicated (A B B C)', [a, b, b, c]],
    ['reordered (B A C)', [b, a, c]],
    ['final moved (A C B)', [a, c, b]],
    ['final dropped (A B)', [a, b]],
  ];
  for (const [name, segs] of cases) test(name, () => assert.equal(failure(Buffer.concat([h, ...segs])), 'payload'));

  test('spliced between two objects of one repository (same position, same plaintext)', () => {
    const other = sealObject(M1, B, plain);
    const b2 = segmentsOf(other)[1]!;
    assert.equal(failure(Buffer.concat([h, a, b2, c])), 'payload');
  });

  test('two final segments', () => {
    const p = bytes(S + 1, 16);
    const x = rawSeal(M1, encodeHeader(A), [
      { plain: p.subarray(0, S), final: true },
      { plain: p.subarray(S), final: true },
    ]);
    assert.equal(failure(x), 'payload');
  });

  test('an empty final segment after a full one, although its tag is authentic', () => {
    const p = bytes(S, 17);
    const x = rawSeal(M1, encodeHeader(A), [
      { plain: p, final: false },
      { plain: new Uint8Array(0), final: true },
    ]);
    assert.equal(x.length, sealedLength(S) + TAG_BYTES);
    assert.equal(failure(x), 'payload');
  });

  test('the raw sealer agrees with ObjectSealer (so the two cases above are well-formed)', () => {
    const p = bytes(S + 1, 18);
    assert.ok(rawSeal(M1, encodeHeader(A), [{ plain: p.subarray(0, S), final: false }, { plain: p.subarray(S), final: true }]).equals(sealObject(M1, A, p)));
  });
});

describe('headers', () => {
  const plain = bytes(300, 19);
  const sealedA = sealObject(M1, A, plain);
  const sealedB = sealObject(M1, B, plain);

  test('swapped between objects: A\'s body under B\'s header fails authentication', () => {
    assert.equal(failure(Buffer.concat([sealedB.subarray(0, HEADER_BYTES), sealedA.subarray(HEADER_BYTES)]), B), 'payload');
  });
  test('an object read under another object\'s name or kind is refused from its header', () => {
    assert.equal(failure(sealedA, B), 'header');
    assert.equal(failure(sealedA, { kind: ObjectKind.Index, id: A.id }), 'header');
  });
  test('swapped between repositories: same header, another object master', () => {
    assert.equal(failure(sealObject(M2, A, plain), A, M1), 'payload');
    assert.equal(failure(sealedA, A, M2), 'payload');
  });
  test('every version but 1 is unsupported, every kind but 1..4 is refused', () => {
    for (let v = 0; v < 256; v++) {
      const c = Buffer.from(sealedA);
      c[4] = v;
      assert.equal(failure(c), v === 1 ? 'ok' : 'version', `version ${v}`);
    }
    for (let k = 0; k < 256; k++) {
      if (k >= 1 && k <= 4) continue;
      const c = Buffer.from(sealedA);
      c[5] = k;
      assert.equal(failure(c, { kind: k, id: A.id }), 'header', `kind ${k}`);
    }
  });
  test('parse → serialise is the identity for every kind', () => {
    for (const kind of [ObjectKind.Pack, ObjectKind.Index, ObjectKind.Snapshot, ObjectKind.Lock]) {
      const h = encodeHeader({ kind, id: id(kind) });
      assert.ok(Buffer.from(encodeHeader(decodeHeader(h))).equals(Buffer.from(h)));
    }
  });
  test('property: a 40-byte string either is refused or is the canonical encoding of what it decodes to', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 40, maxLength: 40 }), fc.boolean(), fc.integer({ min: 1, max: 4 }), (raw, fix, kind) => {
        const b = Buffer.from(raw);
        if (fix) {
          // Push half the cases past the magic so the later checks are reached.
          b.write('CFOB', 0, 'ascii');
          b[4] = 1;
          b[5] = kind;
        }
        let h: ObjectHeader;
        try {
          h = decodeHeader(b);
        } catch (e) {
          assert.ok(e instanceof CofferError);
          return;
        }
        assert.ok(Buffer.from(encodeHeader(h)).equals(b));
      }),
      { numRuns: 2000 },
    );
  });
  test('encodeHeader refuses what no decoder accepts', () => {
    assert.throws(() => encodeHeader({ kind: 9 as ObjectKind, id: id(1) }), RangeError);
    assert.throws(() => encodeHeader({ kind: ObjectKind.Pack, id: new Uint8Array(31) }), RangeError);
  });
});

describe('no plaintext released before its segment authenticates', () => {
  const plain = bytes(2 * S + 1, 20);
  const sealed = sealObject(M1, A, plain);

  /** Feeds `c` in steps, returns what came out before the error (and the error). */
  const release = (c: Buffer, step: number) => {
    const o = new ObjectOpener(M1, A);
    const got: Buffer[] = [];
    try {
      for (let i = 0; i < c.length; i += step) got.push(...o.update(c.subarray(i, i + step)));
      got.push(...o.final());
    } catch (e) {
      return { got: Buffer.concat(got), error: e };
    }
    return { got: Buffer.concat(got), error: undefined };
  };

  for (const step of [1, 7, 4096, FULL + 1]) {
    test(`a flipped byte in segment 2 of 3: exactly segment 1 comes out (read step ${step})`, () => {
      const c = Buffer.from(sealed);
      c[HEADER_BYTES + FULL + 100]! ^= 1;
      const r = release(c, step);
      assert.ok(r.error instanceof DecryptionError);
      assert.ok(r.got.equals(plain.subarray(0, S)), `released ${r.got.length} bytes`);
    });
  }

  test('a flipped byte in segment 1: nothing comes out', () => {
    const c = Buffer.from(sealed);
    c[HEADER_BYTES + 5]! ^= 1;
    const r = release(c, 7);
    assert.ok(r.error instanceof DecryptionError);
    assert.equal(r.got.length, 0);
  });

  test('a bad final tag: the two full segments come out, the last byte never does', () => {
    const c = Buffer.from(sealed);
    c[c.length - 1]! ^= 1;
    const r = release(c, 7);
    assert.ok(r.error instanceof DecryptionError);
    assert.ok(r.got.equals(plain.subarray(0, 2 * S)));
  });

  test('a truncated stream: segments before the cut come out, then final() refuses', () => {
    const r = release(sealed.subarray(0, HEADER_BYTES + 2 * FULL), 7);
    assert.ok(r.error instanceof DecryptionError);
    assert.ok(r.got.equals(plain.subarray(0, S)));
  });

  test('openObject releases nothing of a failed object', () => {
    const c = Buffer.from(sealed);
    c[c.length - 1]! ^= 1;
    assert.throws(() => openObject(M1, A, c), DecryptionError);
  });

  test('misuse after the end is a bug, not a decode result', () => {
    const o = new ObjectOpener(M1, A);
    o.update(sealObject(M1, A, Buffer.from('x')));
    o.final();
    assert.throws(() => o.final(), /final called twice/);
    assert.throws(() => o.update(Buffer.of(1)), /update after final/);
    const s = new ObjectSealer(M1, A);
    s.final();
    assert.throws(() => s.update(Buffer.of(1)), /update after final/);
  });
});
