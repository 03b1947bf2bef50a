/**
 * Runs every known-answer vector in spec/vectors/backup/ (made by test/vectors/generate.ts)
 * and checks the *kind* of each failure, not just that something threw.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac, hkdfSync } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BackupKey } from '../src/crypto/backup-key.js';
import { RepositoryKeys } from '../src/crypto/repository-keys.js';
import { ObjectOpener, decodeHeader, openObject, sealObject, type ObjectHeader } from '../src/crypto/sealed-object.js';
import { FastCdc } from '../src/chunker/fastcdc.js';
import { decodeConfig } from '../src/repository/config.js';
import { decompressBlob } from '../src/repository/compress.js';
import { decodeIndex } from '../src/repository/index-file.js';
import { decodePackTrailer } from '../src/repository/pack.js';
import { PadMode, paddedLength, paddedPackLength, padme, unpadBlob } from '../src/repository/padding.js';
import { decodeSnapshot } from '../src/repository/snapshot.js';
import { decodeListing, type TreeEntry } from '../src/repository/tree.js';
import { ObjectKind } from '../src/crypto/sealed-object.js';
import { CofferError, DecryptionError } from '../src/errors.js';
import { digestOf, patternBytes, type Digest, type Expect, type Pattern } from './vectors/generate.js';

const DIR = fileURLToPath(new URL('../../../../spec/vectors/backup/', import.meta.url));
const EXPECTS: readonly Expect[] = ['success', 'header-failure', 'payload-failure', 'wrong-key', 'unsupported-version', 'corrupt', 'invalid-key', 'not-a-repository'];

interface Vector {
  name: string;
  kind: string;
  expect: Expect;
  [f: string]: unknown;
}

const unhex = (h: string) => Buffer.from(h, 'hex');
type Bytes = { hex: string } | { pattern: Pattern; digest?: Digest } | { digest: Digest } | { zeros: number };

function bytesOf(b: Bytes): Buffer | undefined {
  if ('hex' in b) return unhex(b.hex);
  if ('pattern' in b) {
    const p = patternBytes(b.pattern);
    if (b.digest) assert.deepEqual(digestOf(p), b.digest, 'pattern expands to its digest');
    return p;
  }
  if ('zeros' in b) return Buffer.alloc(b.zeros);
  return undefined;
}

/** What a throwing call threw, as one of the closed set of outcomes. */
function outcome(fn: () => unknown): Expect | 'other' {
  try {
    fn();
    return 'success';
  } catch (e) {
    if (e instanceof DecryptionError) return 'payload-failure';
    if (e instanceof CofferError && ['wrong-key', 'unsupported-version', 'corrupt', 'invalid-key', 'not-a-repository'].includes(e.code)) return e.code as Expect;
    return 'other';
  }
}

/** What a throwing async call threw, as one of the closed set of outcomes. */
async function outcomeAsync(fn: () => Promise<unknown>): Promise<Expect | 'other'> {
  try {
    await fn();
    return 'success';
  } catch (e) {
    if (e instanceof CofferError && ['unsupported-version', 'corrupt'].includes(e.code)) return e.code as Expect;
    return 'other';
  }
}

function describeEntry(t: TreeEntry): Record<string, unknown> {
  const o: Record<string, unknown> = { path: t.rawPath.toString('hex'), type: t.type, mode: t.mode, mtimeNs: String(t.mtimeNs) };
  if (t.owner) o.owner = t.owner;
  if (t.xattrs) o.xattrs = t.xattrs.map((x) => [x.name, x.value.toString('hex')]);
  if (t.type === 'file') Object.assign(o, { size: t.size, chunks: t.chunks, sparse: t.sparse === true });
  if (t.type === 'symlink') o.target = t.target.toString('hex');
  if (t.type === 'hardlink') o.link = t.link.toString('hex');
  if (t.type === 'chardev' || t.type === 'blockdev') Object.assign(o, { major: t.major, minor: t.minor });
  return o;
}

function streamOpen(master: Uint8Array, expected: ObjectHeader, sealed: Uint8Array): Buffer {
  const o = new ObjectOpener(master, expected);
  const out: Buffer[] = [];
  for (let i = 0; i < sealed.length; i += 4099) out.push(...o.update(sealed.subarray(i, i + 4099)));
  out.push(...o.final());
  return Buffer.concat(out);
}

const check: Record<string, (v: Vector) => void | Promise<void>> = {
  'key-parse'(v) {
    if (v.expect === 'success') {
      const k = BackupKey.parse(v.input as string);
      assert.equal(Buffer.from(k.exportBytes()).toString('hex'), v.key);
      assert.equal(k.toDigits(), v.digits);
    } else {
      assert.equal(outcome(() => BackupKey.parse(v.input as string)), v.expect);
    }
  },
  'key-id'(v) {
    assert.equal(Buffer.from(BackupKey.fromBytes(unhex(v.key as string)).keyId()).toString('hex'), v.keyId);
  },
  'repository-key-id'(v) {
    const k = BackupKey.fromBytes(unhex(v.key as string));
    assert.equal(Buffer.from(k.repositoryKeyId(unhex(v.repositoryId as string))).toString('hex'), v.keyId);
    assert.equal(Buffer.from(k.keyCheck(unhex(v.nonce as string))).toString('hex'), v.keyCheck);
    // Spec §3.2 and §4, independently of the code.
    assert.equal(Buffer.from(hkdfSync('sha256', unhex(v.key as string), unhex(v.repositoryId as string), 'coffer/backup/v3/repository-key-id', 16)).toString('hex'), v.keyId);
    const checkKey = Buffer.from(hkdfSync('sha256', unhex(v.key as string), Buffer.alloc(0), 'coffer/backup/v3/key-check', 32));
    assert.equal(createHmac('sha256', checkKey).update(unhex(v.nonce as string)).digest().subarray(0, 16).toString('hex'), v.keyCheck);
  },
  hkdf(v) {
    // Spec §3: plain RFC 5869 HKDF-SHA256; checked both directly and through the code.
    const out = Buffer.from(hkdfSync('sha256', unhex(v.ikm as string), unhex(v.salt as string), unhex(v.info as string), v.length as number));
    assert.equal(out.toString('hex'), v.output);
    assert.equal(unhex(v.info as string).subarray(0, (v.label as string).length).toString('ascii'), v.label);
    if ((v.info as string).length === (v.label as string).length * 2 && (v.ikm as string).length === 64) {
      const k = BackupKey.fromBytes(unhex(v.ikm as string));
      assert.equal(Buffer.from(k.derive(v.label as string, v.length as number, unhex(v.salt as string))).toString('hex'), v.output);
    }
  },
  'sealed-object'(v) {
    const master = unhex(v.objectMaster as string);
    const from = v.masterFrom as { key: string; repositoryId: string };
    assert.equal(Buffer.from(new RepositoryKeys(BackupKey.fromBytes(unhex(from.key)), unhex(from.repositoryId)).objectMaster).toString('hex'), v.objectMaster);
    const exp = v.expected as { kind: number; id: string };
    const expected: ObjectHeader = { kind: exp.kind, id: unhex(exp.id) };
    const sealedDesc = v.sealed as Bytes;
    let sealed = bytesOf(sealedDesc);
    if (v.expect === 'success') {
      const plain = bytesOf(v.plaintext as Bytes)!;
      if (!sealed) {
        // Stored compactly: reseal and compare with the recorded digest.
        sealed = sealObject(master, expected, plain);
        assert.deepEqual(digestOf(sealed), (sealedDesc as { digest: Digest }).digest);
      } else {
        assert.ok(sealObject(master, expected, plain).equals(sealed), 'sealObject reproduces the vector');
      }
      assert.ok(openObject(master, expected, sealed).equals(plain), 'openObject');
      assert.ok(streamOpen(master, expected, sealed).equals(plain), 'ObjectOpener');
      return;
    }
    assert.ok(sealed);
    const s = sealed;
    // In the sealed-object layer a CofferError('corrupt') is a header failure: every
    // payload failure is the one opaque DecryptionError (STYLE.md §4).
    const sealedOutcome = (fn: () => unknown) => {
      const o = outcome(fn);
      return o === 'corrupt' ? 'header-failure' : o;
    };
    assert.equal(sealedOutcome(() => openObject(master, expected, s)), v.expect, 'openObject');
    assert.equal(sealedOutcome(() => streamOpen(master, expected, s)), v.expect, 'ObjectOpener');
    // The stage that failed: a header failure is in the header; a payload failure has a good one.
    const headerOk = outcome(() => {
      const h = decodeHeader(s);
      if (h.kind !== expected.kind || !Buffer.from(h.id).equals(Buffer.from(expected.id))) throw new CofferError('corrupt', 'other object');
    });
    assert.equal(headerOk, v.expect === 'payload-failure' ? 'success' : v.expect === 'unsupported-version' ? 'unsupported-version' : 'corrupt', 'failing stage');
  },
  config(v) {
    const key = BackupKey.fromBytes(unhex(v.key as string));
    const bytes = unhex(v.config as string);
    if (v.expect !== 'success') {
      assert.equal(outcome(() => decodeConfig(key, bytes, 'vector')), v.expect);
      return;
    }
    const c = decodeConfig(key, bytes, 'vector');
    assert.deepEqual(
      { version: c.version, repositoryId: Buffer.from(c.repositoryId).toString('hex'), keyId: Buffer.from(c.keyId).toString('hex'), chunker: c.chunker, compression: c.compression, padding: c.padding },
      v.decoded,
    );
  },
  padding(v) {
    if (v.packLengths) {
      for (const [L, auto, max] of v.packLengths as Array<[number, number, number]>) {
        assert.equal(paddedPackLength(L, PadMode.Auto), auto, `pack auto(${L})`);
        assert.equal(paddedPackLength(L, PadMode.Max), max, `pack max(${L})`);
      }
      return;
    }
    if (v.lengths) {
      for (const [L, auto, max] of v.lengths as Array<[number, number, number]>) {
        assert.equal(padme(L), auto, `padme(${L})`);
        assert.equal(paddedLength(L, PadMode.Max), max, `max(${L})`);
      }
      return;
    }
    const stored = unhex(v.stored as string);
    if (v.expect === 'success') assert.equal(unpadBlob(stored, 'vector').toString('hex'), v.payload);
    else assert.equal(outcome(() => unpadBlob(stored, 'vector')), v.expect);
  },
  async zstd(v) {
    const run = () => decompressBlob(unhex(v.stored as string), v.flags as number, v.rawLength as number, 'vector');
    if (v.expect === 'success') assert.equal((await run()).toString('hex'), v.raw);
    else assert.equal(await outcomeAsync(run), v.expect);
  },
  async pack(v) {
    const plain = unhex(v.plaintext as string);
    if (v.sealed) {
      const keys = new RepositoryKeys(BackupKey.fromBytes(unhex(v.key as string)), unhex(v.repositoryId as string));
      const opened = openObject(keys.objectMaster, { kind: ObjectKind.Pack, id: unhex(v.packId as string) }, unhex(v.sealed as string));
      assert.ok(opened.equals(plain), 'the sealed pack opens to the plaintext');
    }
    if (v.expect !== 'success') {
      assert.equal(outcome(() => decodePackTrailer(plain, 'vector')), v.expect);
      return;
    }
    const keys = new RepositoryKeys(BackupKey.fromBytes(unhex(v.key as string)), unhex(v.repositoryId as string));
    const entries = decodePackTrailer(plain, 'vector');
    const want = v.entries as Array<Record<string, unknown>> | undefined;
    if (want) assert.deepEqual(entries.map((e) => ({ id: e.id.toString('hex'), type: e.type, flags: e.flags, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength })), want.map(({ raw: _raw, ...rest }) => rest));
    for (const [i, e] of entries.entries()) {
      const raw = await decompressBlob(plain.subarray(e.offset, e.offset + e.storedLength), e.flags, e.rawLength, 'vector');
      assert.ok(keys.chunkId(raw).equals(e.id), 'each blob matches its ID');
      if (want) assert.equal(raw.toString('hex'), want[i]!.raw);
    }
  },
  index(v) {
    const plain = unhex(v.plaintext as string);
    if (v.expect !== 'success') {
      assert.equal(outcome(() => decodeIndex(plain, 'vector')), v.expect);
      return;
    }
    const got = decodeIndex(plain, 'vector').map((p) => ({ packId: p.packId.toString('hex'), sealedLength: p.sealedLength, blobs: p.blobs.map((b) => ({ id: b.id.toString('hex'), type: b.type, flags: b.flags, offset: b.offset, storedLength: b.storedLength, rawLength: b.rawLength })) }));
    assert.deepEqual(got, v.decoded);
  },
  tree(v) {
    const bytes = unhex(v.listing as string);
    const version = v.version as 1 | 2;
    if (v.expect !== 'success') {
      assert.equal(outcome(() => decodeListing(bytes, version, 'vector')), v.expect);
      return;
    }
    assert.deepEqual(decodeListing(bytes, version, 'vector').map(describeEntry), v.entries);
  },
  snapshot(v) {
    const bytes = unhex(v.plaintext as string);
    if (v.expect !== 'success') {
      assert.equal(outcome(() => decodeSnapshot(bytes, 'vector')), v.expect);
      return;
    }
    assert.deepEqual(decodeSnapshot(bytes, 'vector'), v.decoded);
  },
  lock(v) {
    const keys = new RepositoryKeys(BackupKey.fromBytes(unhex(v.key as string)), unhex(v.repositoryId as string));
    const plain = openObject(keys.objectMaster, { kind: ObjectKind.Lock, id: unhex(v.objectId as string) }, unhex(v.sealed as string));
    assert.equal(plain.toString('hex'), v.plaintext);
    assert.deepEqual(JSON.parse(plain.toString('utf8')), v.decoded);
  },
  'gear-table'(v) {
    const g = new RepositoryKeys(BackupKey.fromBytes(unhex(v.key as string)), unhex(v.repositoryId as string)).gearTable;
    assert.equal(Buffer.from(g).toString('hex'), v.gearTable);
    for (const [i, val] of Object.entries(v.entries as Record<string, number>)) assert.equal(Buffer.from(g).readInt32LE(Number(i) * 4), val);
  },
  chunker(v) {
    const g = new RepositoryKeys(BackupKey.fromBytes(unhex(v.key as string)), unhex(v.repositoryId as string)).gearTable;
    const cdc = new FastCdc(g, v.params as { minSize: number; avgSize: number; maxSize: number });
    const data = bytesOf(v.input as Bytes)!;
    const got: number[] = [];
    for (let start = 0; start < data.length; ) {
      const n = cdc.cut(data, start, data.length, true);
      got.push(n);
      start += n;
    }
    assert.deepEqual(got, v.chunkLengths);
  },
  'chunk-id'(v) {
    const fn = v.function === 'blake3' ? 'blake3' : 'hmac-sha256';
    const keys = new RepositoryKeys(BackupKey.fromBytes(unhex(v.key as string)), unhex(v.repositoryId as string), fn);
    const chunk = bytesOf(v.chunk as Bytes)!;
    assert.equal(keys.chunkId(chunk).toString('hex'), v.chunkId);
    if (fn === 'blake3') {
      // The key is HKDF(K, R, the BLAKE3 chunk-ID label); the ID keyed BLAKE3 of the chunk under it.
      const k = hkdfSync('sha256', unhex(v.key as string), unhex(v.repositoryId as string), 'coffer/backup/v4/chunk-id-blake3', 32);
      assert.equal(Buffer.from(keys.chunkIdKey).toString('hex'), Buffer.from(k).toString('hex'));
      return;
    }
    // Spec §6.2, independently: HMAC-SHA256 keyed with HKDF(K, R, chunk-id label).
    const k = hkdfSync('sha256', unhex(v.key as string), unhex(v.repositoryId as string), 'coffer/backup/v1/chunk-id', 32);
    assert.equal(createHmac('sha256', Buffer.from(k)).update(chunk).digest('hex'), v.chunkId);
  },
};

const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();
let passed = 0;

test('the vectors directory is complete and well-formed', () => {
  assert.ok(files.length >= 90, `found ${files.length} vectors`);
  const kinds = new Set<string>();
  for (const f of files) {
    const v = JSON.parse(readFileSync(DIR + f, 'utf8')) as Vector;
    assert.equal(`${v.name}.json`, f);
    assert.ok(EXPECTS.includes(v.expect), `${f}: expect ${v.expect} is not in the closed set`);
    assert.ok(v.kind in check, `${f}: unknown kind ${v.kind}`);
    kinds.add(v.kind);
  }
  assert.deepEqual([...kinds].sort(), Object.keys(check).sort());
});

for (const f of files) {
  test(`vector ${f}`, async () => {
    const v = JSON.parse(readFileSync(DIR + f, 'utf8')) as Vector;
    await check[v.kind]!(v);
    passed++;
  });
}

test('vector summary', () => {
  process.stdout.write(`# backup vectors: ${passed}/${files.length} passed\n`);
  assert.equal(passed, files.length);
});

// Guard against a vector set that no longer matches what the generator makes.
test('the checked-in vectors are what the generator makes now', async () => {
  const { generateVectors } = await import('./vectors/generate.js');
  const fresh = generateVectors();
  assert.deepEqual(fresh.map((v) => `${v.name}.json`).sort(), files);
  for (const v of fresh) {
    const onDisk = readFileSync(DIR + `${v.name}.json`, 'utf8');
    assert.equal(createHash('sha256').update(JSON.stringify(v, null, 2) + '\n').digest('hex'), createHash('sha256').update(onDisk).digest('hex'), v.name);
  }
});
