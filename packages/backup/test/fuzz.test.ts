/**
 * Every decoder fed random and mutated bytes (TESTING.md): only CofferError,
 * DecryptionError or RangeError come out, never a TypeError or a hang. Bounded by
 * time; the PRNG is seeded, so a failure names the seed that reproduces it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BackupKey } from '../src/crypto/backup-key.js';
import { ObjectKind, ObjectOpener, decodeHeader, openObject, sealObject } from '../src/crypto/sealed-object.js';
import { CofferError, DecryptionError } from '../src/errors.js';
import { Compression, decodeConfig, encodeConfig, newConfig } from '../src/repository/config.js';
import { decodeIndex, encodeIndex } from '../src/repository/index-file.js';
import { PackBuilder, decodePackTrailer } from '../src/repository/pack.js';
import { BlobType } from '../src/repository/blob.js';
import { decodeEntry, encodeEntry } from '../src/repository/tree.js';
import { decodeSnapshot, encodeSnapshot } from '../src/repository/snapshot.js';
import { bytes, prng } from './helpers.js';

const key = BackupKey.fromBytes(bytes(32, 1));
const M = bytes(32, 2);
const H = { kind: ObjectKind.Index, id: bytes(32, 3) };
const id = (n: number) => bytes(32, 100 + n);

const packPlain = (() => {
  const b = new PackBuilder(M, id(0));
  b.add({ id: id(1), type: BlobType.Data, flags: 0, storedLength: 10, rawLength: 10 }, bytes(10, 4));
  b.add({ id: id(2), type: BlobType.Tree, flags: 1, storedLength: 5, rawLength: 50 }, bytes(5, 5));
  const done = b.finish();
  return openObject(M, { kind: ObjectKind.Pack, id: id(0) }, Buffer.concat(done.parts));
})();
const seeds: Record<string, Buffer> = {
  sealed: sealObject(M, H, bytes(300, 6)),
  config: Buffer.from(encodeConfig(key, newConfig(key, { minSize: 4096, avgSize: 16384, maxSize: 65536 }, Compression.Zstd))),
  index: encodeIndex([{ packId: id(0), sealedLength: 1234, blobs: [{ id: id(1), type: BlobType.Data, flags: 0, offset: 0, storedLength: 10, rawLength: 10 }, { id: id(2), type: BlobType.Tree, flags: 1, offset: 10, storedLength: 5, rawLength: 50 }] }]),
  pack: packPlain,
  entry: Buffer.from(encodeEntry({ path: 'root/a', rawPath: Buffer.from('root/a'), type: 'file', mode: 0o644, mtimeNs: 1_500_000n, owner: { uid: 1, gid: 2, user: 'u' }, xattrs: [{ name: 'user.a', value: Buffer.from('v') }], size: 3, chunks: [id(1).toString('hex')], inode: '7', ctime: '2' })),
  snapshot: encodeSnapshot({ version: 1, time: '2024-01-01T00:00:00.000Z', hostname: 'h', username: 'u', paths: ['/a'], tags: [], tree: [id(3).toString('hex')], stats: { files: 1, dirs: 0, bytes: 3, addedBytes: 3, newChunks: 1 } }),
};

const decoders: Record<string, [string, (b: Buffer) => unknown]> = {
  decodeHeader: ['sealed', (b) => decodeHeader(b)],
  openObject: ['sealed', (b) => openObject(M, H, b)],
  ObjectOpener: ['sealed', (b) => {
    const o = new ObjectOpener(M, H);
    o.update(b);
    return o.final();
  }],
  decodeConfig: ['config', (b) => decodeConfig(key, b, 'x')],
  decodeIndex: ['index', (b) => decodeIndex(b, 'x')],
  decodePackTrailer: ['pack', (b) => decodePackTrailer(b, 'x')],
  decodeEntry: ['entry', (b) => decodeEntry(b.toString('utf8'), 'x')],
  decodeSnapshot: ['snapshot', (b) => decodeSnapshot(b, 'x')],
};

function mutate(b: Buffer, r: () => number): Buffer {
  let c = Buffer.from(b);
  const n = 1 + (r() % 4);
  for (let k = 0; k < n; k++) {
    const at = c.length ? r() % c.length : 0;
    switch (r() % 7) {
      case 0: if (c.length) c[at]! ^= 1 << (r() % 8); break;
      case 1: if (c.length) c[at] = r() & 0xff; break;
      case 2: c = c.subarray(0, at); break;
      case 3: c = Buffer.concat([c, bytes(r() % 64, r())]); break;
      case 4: if (c.length >= at + 4) c.writeUInt32BE([0, 0xffffffff, 0x7fffffff, 1, r()][r() % 5]!, at); break;
      case 5: c = Buffer.concat([c.subarray(0, at), c.subarray(at, at + (r() % 32)), c.subarray(at)]); break;
      case 6: if (c.length) c[at] = [0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x30, 0x2d, 0x65][r() % 10]!; break;
    }
  }
  return c;
}

// A run count, not a time budget: the same inputs on a loaded machine as on an idle one
// (COFFER_FUZZ_RUNS for a longer session).
const RUNS = Number(process.env.COFFER_FUZZ_RUNS ?? 3000);

for (const [name, [seed, decode]] of Object.entries(decoders)) {
  test(`fuzz ${name}: only clean errors (${RUNS} inputs)`, () => {
    const r = prng(name.length * 7919 + 1);
    let runs = 0;
    while (runs < RUNS) {
      const input = runs % 4 === 0 ? bytes(r() % 200, r()) : mutate(seeds[seed]!, r);
      const t0 = Date.now();
      try {
        decode(input);
      } catch (e) {
        if (!(e instanceof CofferError || e instanceof DecryptionError || e instanceof RangeError)) {
          assert.fail(`${name} threw ${String(e)} on ${input.toString('hex').slice(0, 400)}`);
        }
      }
      // Time is the property here (no input makes a decoder hang), with a wide margin.
      assert.ok(Date.now() - t0 < 5000, `${name} took ${Date.now() - t0} ms on one input`);
      runs++;
    }
  });
}
