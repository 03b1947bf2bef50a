/**
 * Generates the known-answer vectors of spec/backup-format.md under
 * spec/vectors/backup/, one JSON file per scenario (`npm run vectors`).
 *
 * Deterministic: every key, repository ID and object ID is a fixed value, and large
 * plaintexts are a described pattern (see `patternBytes`). Adversarial objects (two
 * final segments, an empty final segment after a full one, …) can't be made through
 * the public API, so this file carries its own minimal STREAM sealer (`rawSeal`),
 * written from the spec, and checks that it agrees with `sealObject` byte for byte.
 */
import { createCipheriv, createHash, createHmac, hkdfSync } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BackupKey } from '../../src/crypto/backup-key.js';
import { BackupLabel } from '../../src/crypto/labels.js';
import { RepositoryKeys } from '../../src/crypto/repository-keys.js';
import { ObjectKind, SEGMENT_BYTES, TAG_BYTES, encodeHeader, sealObject } from '../../src/crypto/sealed-object.js';
import { FastCdc, type ChunkerParams } from '../../src/chunker/fastcdc.js';
import { Compression, encodeConfig, type RepositoryConfig } from '../../src/repository/config.js';
import { formatV2Vectors } from './generate-v2.js';

/** The closed set of outcomes a vector may expect (spec/vectors/backup/README.md). */
export type Expect =
  | 'success'
  | 'header-failure'
  | 'payload-failure'
  | 'wrong-key'
  | 'unsupported-version'
  | 'corrupt'
  | 'invalid-key'
  | 'not-a-repository';

export interface Pattern {
  /** Concatenation of SHA-256(utf8(seed) || uint32be(j)) for j = 0, 1, …, cut to `length`. */
  generator: 'sha256-counter';
  seed: string;
  length: number;
}

export function patternBytes(p: Pattern): Buffer {
  const out = Buffer.alloc(Math.ceil(p.length / 32) * 32);
  const seed = Buffer.from(p.seed, 'utf8');
  const ctr = Buffer.alloc(4);
  for (let j = 0; j * 32 < p.length; j++) {
    ctr.writeUInt32BE(j);
    createHash('sha256').update(seed).update(ctr).digest().copy(out, j * 32);
  }
  return out.subarray(0, p.length);
}

/** A compact description of large bytes: length, SHA-256, first and last 32 bytes. */
export interface Digest {
  length: number;
  sha256: string;
  head: string;
  tail: string;
}

export function digestOf(b: Uint8Array): Digest {
  const buf = Buffer.from(b);
  return {
    length: buf.length,
    sha256: createHash('sha256').update(buf).digest('hex'),
    head: buf.subarray(0, 32).toString('hex'),
    tail: buf.subarray(Math.max(0, buf.length - 32)).toString('hex'),
  };
}

const S = SEGMENT_BYTES;
const hex = (b: Uint8Array | ArrayBuffer) => Buffer.from(b as Uint8Array).toString('hex');
const seq = (n: number, from: number) => Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));

// Fixed inputs (spec/vectors/backup/README.md lists them).
export const K1 = seq(32, 0x00);
export const K2 = seq(32, 0x20);
export const R1 = seq(16, 0xa0);
export const R2 = seq(16, 0xb0);
export const objectId = (n: number) => seq(32, 0x40 + n * 0x10);

/** Spec §5.2, written out again here rather than imported: the object key. */
function objectKey(master: Uint8Array, header: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', master, new Uint8Array(0), Buffer.concat([Buffer.from(BackupLabel.objectKey), header]), 32));
}

/** Spec §5.3: one segment, with the final flag given explicitly. */
function rawSegment(key: Buffer, counter: number, final: boolean, plain: Uint8Array): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = final ? 1 : 0;
  const c = createCipheriv('aes-256-gcm', key, nonce);
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
}

/** Seals `segments` (plaintexts) with explicit final flags, after `header`. */
export function rawSeal(master: Uint8Array, header: Uint8Array, segments: Array<{ plain: Uint8Array; final: boolean }>): Buffer {
  const key = objectKey(master, header);
  return Buffer.concat([header, ...segments.map((s, i) => rawSegment(key, i, s.final, s.plain))]);
}

/** The correct segmentation: full segments, then a final one (empty only if alone). */
export function splitPlain(p: Uint8Array): Array<{ plain: Uint8Array; final: boolean }> {
  const out: Array<{ plain: Uint8Array; final: boolean }> = [];
  const n = Math.max(1, Math.ceil(p.length / S));
  for (let i = 0; i < n; i++) out.push({ plain: p.subarray(i * S, Math.min(p.length, (i + 1) * S)), final: i === n - 1 });
  return out;
}

/** Splits a sealed object into its header and sealed segments. */
function sealedSegments(sealed: Buffer): { header: Buffer; segs: Buffer[] } {
  const segs: Buffer[] = [];
  for (let o = 40; o < sealed.length; o += S + TAG_BYTES) segs.push(sealed.subarray(o, Math.min(sealed.length, o + S + TAG_BYTES)));
  return { header: sealed.subarray(0, 40), segs };
}

interface Vector {
  name: string;
  kind: string;
  description: string;
  expect: Expect;
  [field: string]: unknown;
}

export function generateVectors(): Vector[] {
  const out: Vector[] = [];
  const add = (v: Vector) => out.push(v);
  const key1 = BackupKey.fromBytes(K1);
  const key2 = BackupKey.fromBytes(K2);
  const keys11 = new RepositoryKeys(key1, R1);
  const keys12 = new RepositoryKeys(key1, R2);
  const M = keys11.objectMaster;

  // --- §3.1 key encoding -------------------------------------------------------------
  const canon = hex(K1);
  const grouped = canon.replace(/(.{4})(?=.)/g, '$1 ');
  const goodForms: Array<[string, string, string]> = [
    ['canonical', 'the form coffer prints: 16 groups of 4 lowercase digits', grouped],
    ['no-separators', '64 digits, no separators', canon],
    ['uppercase', 'upper case digits', grouped.toUpperCase()],
    ['mixed-case', 'mixed case', canon.replace(/[a-f]/g, (c, i: number) => (i % 2 ? c.toUpperCase() : c))],
    ['dashes', 'groups separated by dashes', canon.replace(/(.{4})(?=.)/g, '$1-')],
    ['dashes-and-spaces', 'dashes with spaces around them, runs of separators', canon.replace(/(.{8})(?=.)/g, '$1 - ')],
    ['line-breaks', 'four lines of four groups, CRLF, with a trailing newline and tabs', grouped.replace(/(.{19}) /g, '$1\r\n\t') + '\n'],
    ['surrounding-space', 'leading and trailing spaces', `   ${grouped}  `],
  ];
  for (const [n, d, input] of goodForms) {
    add({ name: `key-parse-${n}`, kind: 'key-parse', description: d, expect: 'success', input, key: canon, digits: grouped });
  }
  const badForms: Array<[string, string, string]> = [
    ['empty', 'nothing typed', ''],
    ['63-digits', 'one digit short', canon.slice(1)],
    ['65-digits', 'one digit too many', canon + '0'],
    ['non-hex', "a letter that isn't a hex digit", 'g' + canon.slice(1)],
    ['0x-prefix', 'a 0x prefix is not accepted', '0x' + canon],
    ['underscore', 'underscores are not separators', canon.replace(/(.{4})(?=.)/g, '$1_')],
    ['en-dash', 'only ASCII hyphen-minus is a dash', canon.replace(/(.{4})(?=.)/g, '$1\u2013')],
    ['128-bit', 'a 32-digit key (half a key)', canon.slice(0, 32)],
  ];
  for (const [n, d, input] of badForms) add({ name: `key-parse-${n}`, kind: 'key-parse', description: d, expect: 'invalid-key', input });

  // --- §3.2 key ID ---------------------------------------------------------------------
  for (const [n, k] of [['k1', K1], ['k2', K2], ['zero', Buffer.alloc(32)]] as const) {
    add({ name: `key-id-${n}`, kind: 'key-id', description: 'HKDF-SHA256(K, salt = empty, info = key-id label), 16 bytes', expect: 'success', key: hex(k), keyId: hex(BackupKey.fromBytes(k).keyId()) });
  }

  // --- §3.2 version 3: the repository key ID and the key check ----------------------------
  for (const [n, k, r] of [['k1-r1', K1, R1], ['k1-r2', K1, R2], ['k2-r1', K2, R1]] as const) {
    const key = BackupKey.fromBytes(k);
    const nonce = Buffer.from(r).reverse();
    add({
      name: `repository-key-id-${n}`,
      kind: 'repository-key-id',
      description: 'version 3: keyId = HKDF-SHA256(K, salt = R, info = repository-key-id label, 16); keyCheck = HMAC-SHA256(HKDF-SHA256(K, salt = empty, info = key-check label, 32), nonce)[0..15]',
      expect: 'success',
      key: hex(k),
      repositoryId: hex(r),
      keyId: hex(key.repositoryKeyId(r)),
      nonce: hex(nonce),
      keyCheck: hex(key.keyCheck(nonce)),
    });
  }

  // --- §3.3, §4, §5.2, §6: every HKDF derivation --------------------------------------------
  const derivations: Array<[string, string, Uint8Array, Uint8Array, number]> = [
    ['key-id', BackupLabel.keyId, K1, new Uint8Array(0), 16],
    ['config-mac', BackupLabel.configMac, K1, R1, 32],
    ['object-master', BackupLabel.objectMaster, K1, R1, 32],
    ['object-master-other-repository', BackupLabel.objectMaster, K1, R2, 32],
    ['chunk-id', BackupLabel.chunkId, K1, R1, 32],
    ['gear-table', BackupLabel.gearTable, K1, R1, 1024],
    ['repository-key-id', BackupLabel.repositoryKeyId, K1, R1, 16],
    ['key-check', BackupLabel.keyCheck, K1, new Uint8Array(0), 32],
    ['chunk-id-blake3', BackupLabel.chunkIdBlake3, K1, R1, 32],
  ];
  for (const [n, label, ikm, salt, length] of derivations) {
    add({
      name: `hkdf-${n}`,
      kind: 'hkdf',
      description: `HKDF-SHA256 with info = "${label}"`,
      expect: 'success',
      ikm: hex(ikm),
      salt: hex(salt),
      info: hex(Buffer.from(label, 'ascii')),
      label,
      length,
      output: hex(hkdfSync('sha256', ikm, salt, label, length)),
    });
  }
  {
    const header = encodeHeader({ kind: ObjectKind.Pack, id: objectId(0) });
    const info = Buffer.concat([Buffer.from(BackupLabel.objectKey, 'ascii'), header]);
    add({
      name: 'hkdf-object-key',
      kind: 'hkdf',
      description: 'the key of one sealed object: ikm = object master (K1, R1), salt empty, info = label || header (§5.2)',
      expect: 'success',
      ikm: hex(M),
      salt: '',
      info: hex(info),
      label: BackupLabel.objectKey,
      length: 32,
      output: hex(objectKey(M, header)),
    });
  }

  // --- §5 sealed objects: successes ------------------------------------------------------
  const pat = (length: number, seed = 'coffer sealed-object vector'): Pattern => ({ generator: 'sha256-counter', seed, length });
  const base = { objectMaster: hex(M), masterFrom: { key: hex(K1), repositoryId: hex(R1) } };
  const idPack = objectId(0);
  const expectedPack = { kind: ObjectKind.Pack, id: hex(idPack) };
  for (const n of [0, 1, 16, S - 1, S, S + 1, 2 * S + 1]) {
    const plain = patternBytes(pat(n));
    const sealed = sealObject(M, { kind: ObjectKind.Pack, id: idPack }, plain);
    const raw = rawSeal(M, encodeHeader({ kind: ObjectKind.Pack, id: idPack }), splitPlain(plain));
    if (!raw.equals(sealed)) throw new Error(`generator: rawSeal and sealObject disagree at length ${n}`);
    const small = sealed.length <= 1024;
    add({
      name: `sealed-success-length-${n}`,
      kind: 'sealed-object',
      description: `a ${n}-byte plaintext in ${Math.max(1, Math.ceil(n / S))} segment(s)`,
      expect: 'success',
      ...base,
      expected: expectedPack,
      plaintext: small ? { hex: hex(plain) } : { pattern: pat(n), digest: digestOf(plain) },
      sealed: small ? { hex: hex(sealed) } : { digest: digestOf(sealed) },
    });
  }
  for (const [kind, name] of [[ObjectKind.Index, 'index'], [ObjectKind.Snapshot, 'snapshot'], [ObjectKind.Lock, 'lock']] as const) {
    const plain = Buffer.from(`a ${name} object`);
    add({
      name: `sealed-success-kind-${name}`,
      kind: 'sealed-object',
      description: `object kind ${kind} (${name})`,
      expect: 'success',
      ...base,
      expected: { kind, id: hex(objectId(kind)) },
      plaintext: { hex: hex(plain) },
      sealed: { hex: hex(sealObject(M, { kind, id: objectId(kind) }, plain)) },
    });
  }

  // --- §5 sealed objects: failures ------------------------------------------------------
  const small = Buffer.from('Coffer: a small object in one segment');
  const sealedSmall = sealObject(M, { kind: ObjectKind.Pack, id: idPack }, small);
  const fail = (name: string, expect: Expect, description: string, sealed: Uint8Array, extra: Record<string, unknown> = {}) =>
    add({ name, kind: 'sealed-object', description, expect, ...base, expected: expectedPack, sealed: { hex: hex(sealed) }, ...extra });
  const withByte = (b: Buffer, i: number, v: number) => {
    const c = Buffer.from(b);
    c[i] = v;
    return c;
  };
  fail('sealed-header-bad-magic', 'header-failure', 'magic "CFOX" instead of "CFOB"', withByte(sealedSmall, 3, 0x58));
  fail('sealed-header-version-0', 'unsupported-version', 'format version 0', withByte(sealedSmall, 4, 0));
  fail('sealed-header-version-2', 'unsupported-version', 'format version 2', withByte(sealedSmall, 4, 2));
  fail('sealed-header-kind-0', 'header-failure', 'object kind 0 is not defined', withByte(sealedSmall, 5, 0));
  fail('sealed-header-kind-5', 'header-failure', 'object kind 5 is not defined', withByte(sealedSmall, 5, 5));
  fail('sealed-header-segment-size-15', 'header-failure', 'log2 segment size 15 (version 1 fixes 16)', withByte(sealedSmall, 6, 15));
  fail('sealed-header-segment-size-17', 'header-failure', 'log2 segment size 17 (version 1 fixes 16)', withByte(sealedSmall, 6, 17));
  fail('sealed-header-reserved-flags', 'header-failure', 'reserved flags byte is 1', withByte(sealedSmall, 7, 1));
  fail('sealed-header-reserved-flags-high', 'header-failure', 'reserved flags byte is 0x80', withByte(sealedSmall, 7, 0x80));
  fail('sealed-header-short', 'header-failure', '39 bytes: shorter than a header', sealedSmall.subarray(0, 39));
  fail('sealed-header-short-version-2', 'header-failure', '18 bytes with a good magic and version 2: the length is checked first, so this is "shorter than a header", not "unsupported version"', withByte(sealedSmall, 4, 2).subarray(0, 18));
  fail('sealed-header-empty', 'header-failure', 'zero bytes', new Uint8Array(0));
  fail('sealed-header-other-id', 'header-failure', 'a valid object whose header names another object ID than the expected one', sealObject(M, { kind: ObjectKind.Pack, id: objectId(1) }, small));
  fail('sealed-header-other-kind', 'header-failure', 'a valid Index object where a Pack is expected (same ID)', sealObject(M, { kind: ObjectKind.Index, id: idPack }, small));
  fail('sealed-header-id-bit-flip', 'header-failure', 'one bit of the object ID in the header flipped', withByte(sealedSmall, 20, sealedSmall[20]! ^ 0x01));

  fail('sealed-payload-header-only', 'payload-failure', 'a header and no segment at all', sealedSmall.subarray(0, 40));
  fail('sealed-payload-shorter-than-tag', 'payload-failure', 'a final segment of 15 bytes (shorter than a tag)', sealedSmall.subarray(0, 55));
  {
    const one = sealObject(M, { kind: ObjectKind.Pack, id: idPack }, Buffer.from('x'));
    fail('sealed-payload-missing-tag', 'payload-failure', 'a 1-byte object with its tag cut off', one.subarray(0, 41));
  }
  fail('sealed-payload-truncated-1', 'payload-failure', 'the last byte of the tag removed', sealedSmall.subarray(0, sealedSmall.length - 1));
  fail('sealed-payload-appended-byte', 'payload-failure', 'one zero byte appended', Buffer.concat([sealedSmall, Buffer.alloc(1)]));
  fail('sealed-payload-flipped-tag', 'payload-failure', 'last bit of the tag flipped', withByte(sealedSmall, sealedSmall.length - 1, sealedSmall[sealedSmall.length - 1]! ^ 0x80));
  fail('sealed-payload-flipped-ciphertext', 'payload-failure', 'first ciphertext bit flipped', withByte(sealedSmall, 40, sealedSmall[40]! ^ 0x01));
  {
    const other = sealObject(M, { kind: ObjectKind.Pack, id: objectId(1) }, small);
    fail('sealed-payload-header-swapped', 'payload-failure', 'the body of object 0 under the header (and name) of object 1: the header is bound into the key', Buffer.concat([other.subarray(0, 40), sealedSmall.subarray(40)]), {
      expected: { kind: ObjectKind.Pack, id: hex(objectId(1)) },
    });
    const otherRepo = sealObject(keys12.objectMaster, { kind: ObjectKind.Pack, id: idPack }, small);
    fail('sealed-payload-other-repository', 'payload-failure', 'the same header and plaintext sealed in repository R2 (same key K1), opened with R1\'s object master', otherRepo);
    const otherKey = sealObject(new RepositoryKeys(key2, R1).objectMaster, { kind: ObjectKind.Pack, id: idPack }, small);
    fail('sealed-payload-other-key', 'payload-failure', 'the same object sealed under key K2, repository R1', otherKey);
  }
  {
    const header = encodeHeader({ kind: ObjectKind.Pack, id: idPack });
    const s1 = patternBytes(pat(S + 1));
    fail('sealed-payload-two-final-segments', 'payload-failure', 'S + 1 bytes with the final flag set on both segments', rawSeal(M, header, [
      { plain: s1.subarray(0, S), final: true },
      { plain: s1.subarray(S), final: true },
    ]), { plaintext: { pattern: pat(S + 1) } });
    fail('sealed-payload-final-first', 'payload-failure', 'S + 1 bytes where only the first segment carries the final flag', rawSeal(M, header, [
      { plain: s1.subarray(0, S), final: true },
      { plain: s1.subarray(S), final: false },
    ]));
    fail('sealed-payload-no-final', 'payload-failure', 'S bytes in one segment without the final flag', rawSeal(M, header, [{ plain: s1.subarray(0, S), final: false }]));
    fail('sealed-payload-empty-final-after-full', 'payload-failure', 'S bytes as a full non-final segment and an authentic empty final segment: a sealer never makes this, so its length is rejected', rawSeal(M, header, [
      { plain: s1.subarray(0, S), final: false },
      { plain: new Uint8Array(0), final: true },
    ]));
    fail('sealed-payload-full-final-truncated-to-boundary', 'payload-failure', 'S + 1 bytes with the final segment removed: the first segment is not final', sealObject(M, { kind: ObjectKind.Pack, id: idPack }, s1).subarray(0, 40 + S + TAG_BYTES));
    {
      const { header: h2, segs: two } = sealedSegments(sealObject(M, { kind: ObjectKind.Pack, id: idPack }, s1));
      fail('sealed-payload-segment-duplicated', 'payload-failure', 'S + 1 bytes (segments A full, B 1 byte, final): A A B', Buffer.concat([h2, two[0]!, two[0]!, two[1]!]));
    }
    fail('sealed-payload-extended-by-segment', 'payload-failure', 'S bytes (one final segment) followed by a copy of it', (() => {
      const one = sealObject(M, { kind: ObjectKind.Pack, id: idPack }, s1.subarray(0, S));
      return Buffer.concat([one, one.subarray(40)]);
    })());

    const p3 = patternBytes(pat(2 * S + 1));
    const sealed3 = sealObject(M, { kind: ObjectKind.Pack, id: idPack }, p3);
    const { header: h3, segs } = sealedSegments(sealed3);
    const [a, b, c] = segs as [Buffer, Buffer, Buffer];
    const d3 = (what: string) => `2S + 1 bytes (segments A, B full; C 1 byte, final): ${what}`;
    fail('sealed-payload-segments-swapped', 'payload-failure', d3('B A C'), Buffer.concat([h3, b, a, c]));
    fail('sealed-payload-segment-deleted', 'payload-failure', d3('A C'), Buffer.concat([h3, a, c]));
    fail('sealed-payload-truncated-at-boundary', 'payload-failure', d3('A B (final segment dropped)'), Buffer.concat([h3, a, b]));
    const other = sealObject(M, { kind: ObjectKind.Pack, id: objectId(1) }, p3);
    const bOther = sealedSegments(other).segs[1]!;
    fail('sealed-payload-segment-spliced', 'payload-failure', d3("A B' C where B' is segment 1 of another object with the same plaintext"), Buffer.concat([h3, a, bOther, c]));
  }

  // --- §4 config -------------------------------------------------------------------
  const cfg: RepositoryConfig = { version: 1, repositoryId: R1, keyId: key1.keyId(), chunker: { minSize: 512 * 1024, avgSize: 1 << 20, maxSize: 8 << 20 }, compression: Compression.Zstd, padding: 0 };
  const good = Buffer.from(encodeConfig(key1, cfg));
  const decoded = (c: RepositoryConfig) => ({ version: c.version, repositoryId: hex(c.repositoryId), keyId: hex(c.keyId), chunker: c.chunker, compression: c.compression, padding: c.padding });
  const cfgVec = (name: string, expect: Expect, description: string, bytes: Uint8Array, key = K1, c = cfg) =>
    add({ name: `config-${name}`, kind: 'config', description, expect, key: hex(key), config: hex(bytes), ...(expect === 'success' ? { decoded: decoded(c) } : {}) });
  /** A config with `edit` applied to its first 56 bytes and a MAC recomputed under K1. */
  const remac = (edit: (b: Buffer) => void) => {
    const b = Buffer.from(good);
    edit(b);
    const macKey = hkdfSync('sha256', K1, b.subarray(8, 24), BackupLabel.configMac, 32);
    createHmac('sha256', Buffer.from(macKey)).update(b.subarray(0, 56)).digest().copy(b, 56);
    return b;
  };
  cfgVec('good', 'success', 'a version 1 config for K1, repository R1, default chunker, zstd', good);
  cfgVec('good-no-compression', 'success', 'compression 0 (none)', encodeConfig(key1, { ...cfg, compression: Compression.None }), K1, { ...cfg, compression: Compression.None });
  cfgVec('wrong-key', 'wrong-key', 'the K1 config opened with K2', good, K2);
  cfgVec('corrupt-mac', 'corrupt', 'last MAC bit flipped', withByte(good, 87, good[87]! ^ 0x01));
  cfgVec('corrupt-repository-id', 'corrupt', 'a repository ID bit flipped (the MAC key and MAC no longer match)', withByte(good, 8, good[8]! ^ 0x01));
  cfgVec('corrupt-chunker', 'corrupt', 'the chunker average size changed without a new MAC', withByte(good, 46, 0x20));
  cfgVec('corrupt-key-id', 'corrupt', 'one bit of the key ID flipped: the MAC still verifies with the right key ID, so the key is right and the config corrupt', withByte(good, 24, good[24]! ^ 0x01));
  cfgVec('corrupt-reserved', 'corrupt', 'a reserved byte (5) set, MAC recomputed', remac((b) => (b[5] = 1)));
  cfgVec('corrupt-reserved-tail', 'corrupt', 'a reserved byte (55) set, MAC recomputed', remac((b) => (b[55] = 1)));
  cfgVec('corrupt-chunker-params', 'corrupt', 'average size not a power of two, MAC recomputed', remac((b) => b.writeUInt32BE(1000 * 1000, 44)));
  cfgVec('unknown-compression', 'unsupported-version', 'compression 2 (unknown), MAC recomputed', remac((b) => (b[52] = 2)));
  cfgVec('version-5', 'unsupported-version', 'repository version 5', withByte(good, 4, 5));
  cfgVec('version-5-longer', 'unsupported-version', 'repository version 5 of another size: the version is read before the size', Buffer.concat([withByte(good, 4, 5), Buffer.alloc(16)]));
  const cfg2: RepositoryConfig = { ...cfg, version: 2, padding: 1 };
  const good2 = Buffer.from(encodeConfig(key1, cfg2));
  cfgVec('good-v2', 'success', 'a version 2 config: byte 53 is the default padding (1 = auto)', good2, K1, cfg2);
  cfgVec('good-v2-pad-max', 'success', 'a version 2 config with padding 2 (max)', encodeConfig(key1, { ...cfg2, padding: 2 }), K1, { ...cfg2, padding: 2 });
  cfgVec('v2-unknown-padding', 'unsupported-version', 'version 2 with padding 3 (unknown), MAC recomputed', remac((b) => {
    b[4] = 2;
    b[53] = 3;
  }));
  cfgVec('v1-byte-53-set', 'corrupt', 'version 1 with byte 53 (reserved in version 1) set, MAC recomputed', remac((b) => (b[53] = 1)));
  // Version 3 (§4): 120 bytes, the key ID salted with R, a key check over a nonce.
  const N1 = Buffer.from(R2).reverse();
  const cfg3: RepositoryConfig = { ...cfg2, version: 3, keyId: key1.repositoryKeyId(R1), keyCheckNonce: N1 };
  const good3 = Buffer.from(encodeConfig(key1, cfg3));
  cfgVec('good-v3', 'success', 'a version 3 config: key ID salted with R1 (bytes 24..39), key-check nonce (56..71) and tag (72..87), MAC over 0..87 (88..119)', good3, K1, cfg3);
  cfgVec('v3-wrong-key', 'wrong-key', 'the K1 version 3 config opened with K2: neither the key ID nor the key check verifies', good3, K2);
  cfgVec('v3-wrong-key-damaged-repository-id', 'wrong-key', 'opened with K2 and a repository ID bit flipped: still wrong key', withByte(good3, 8, good3[8]! ^ 0x01), K2);
  cfgVec('v3-corrupt-repository-id', 'corrupt', 'a repository ID bit flipped: the salted key ID no longer matches, but the key check proves the key right', withByte(good3, 8, good3[8]! ^ 0x01));
  cfgVec('v3-corrupt-key-id', 'corrupt', 'a key ID bit flipped: the key check proves the key right', withByte(good3, 39, good3[39]! ^ 0x80));
  cfgVec('v3-corrupt-nonce', 'corrupt', 'a key-check nonce bit flipped: the key ID proves the key right, the MAC fails', withByte(good3, 56, good3[56]! ^ 0x01));
  cfgVec('v3-corrupt-key-check', 'corrupt', 'a key-check tag bit flipped', withByte(good3, 87, good3[87]! ^ 0x01));
  cfgVec('v3-corrupt-mac', 'corrupt', 'last MAC bit flipped', withByte(good3, 119, good3[119]! ^ 0x01));
  // Version 4 (§4, §6.2): version 3's layout; chunk IDs are keyed BLAKE3.
  const cfg4: RepositoryConfig = { ...cfg3, version: 4 };
  const good4 = Buffer.from(encodeConfig(key1, cfg4));
  cfgVec('good-v4', 'success', 'a version 4 config: version 3\'s layout with byte 4 = 4 (chunk IDs are keyed BLAKE3, §6.2)', good4, K1, cfg4);
  cfgVec('v4-as-v3', 'corrupt', 'the version 4 config with its version byte set to 3 (MAC not recomputed): a repository cannot be made to change its chunk IDs', withByte(good4, 4, 3));
  cfgVec('v3-too-short', 'corrupt', 'a version 3 config of 88 bytes (the version 2 size)', good3.subarray(0, 88));
  cfgVec('v3-unsalted-key-id', 'corrupt', 'a version 3 config storing the unsalted key ID (as version 2 does), MACs recomputed: the key check proves the key right', (() => {
    const b = Buffer.from(good3);
    Buffer.from(key1.keyId()).copy(b, 24);
    const macKey = hkdfSync('sha256', K1, b.subarray(8, 24), BackupLabel.configMac, 32);
    createHmac('sha256', Buffer.from(macKey)).update(b.subarray(0, 88)).digest().copy(b, 88);
    return b;
  })());
  cfgVec('too-long', 'corrupt', 'a version 1 config with one byte appended', Buffer.concat([good, Buffer.alloc(1)]));
  cfgVec('too-short', 'corrupt', 'a version 1 config missing its last byte', good.subarray(0, 87));
  cfgVec('not-a-repository', 'not-a-repository', 'a text file', Buffer.from('hello, world\n'));
  cfgVec('not-a-repository-empty', 'not-a-repository', 'an empty file', new Uint8Array(0));
  cfgVec('not-a-repository-sealed', 'not-a-repository', 'a sealed object where the config should be', sealedSmall);

  // --- §6 chunker ---------------------------------------------------------------------
  const gear = keys11.gearTable;
  const dv = new DataView(gear.buffer, gear.byteOffset, gear.byteLength);
  add({
    name: 'gear-table-k1-r1',
    kind: 'gear-table',
    description: 'the 1024-byte gear table of K1, R1, and its first 8 and last 2 entries as signed 32-bit little-endian values',
    expect: 'success',
    key: hex(K1),
    repositoryId: hex(R1),
    gearTable: hex(gear),
    entries: { '0': dv.getInt32(0, true), '1': dv.getInt32(4, true), '2': dv.getInt32(8, true), '3': dv.getInt32(12, true), '4': dv.getInt32(16, true), '5': dv.getInt32(20, true), '6': dv.getInt32(24, true), '7': dv.getInt32(28, true), '254': dv.getInt32(1016, true), '255': dv.getInt32(1020, true) },
  });
  const input = pat(4 << 20, 'coffer chunker vector');
  const data = patternBytes(input);
  const chunkRuns: Array<[string, ChunkerParams, Uint8Array, Uint8Array]> = [
    ['small', { minSize: 2048, avgSize: 8192, maxSize: 65536 }, K1, R1],
    ['small-k2', { minSize: 2048, avgSize: 8192, maxSize: 65536 }, K2, R1],
    ['tiny', { minSize: 64, avgSize: 1024, maxSize: 4096 }, K1, R1],
    ['default', { minSize: 512 * 1024, avgSize: 1 << 20, maxSize: 8 << 20 }, K1, R1],
  ];
  for (const [n, params, k, r] of chunkRuns) {
    const cdc = new FastCdc(new RepositoryKeys(BackupKey.fromBytes(k), r).gearTable, params);
    const lengths: number[] = [];
    for (let start = 0; start < data.length; ) {
      const len = cdc.cut(data, start, data.length, true);
      lengths.push(len);
      start += len;
    }
    add({ name: `chunker-${n}`, kind: 'chunker', description: `cut points of a 4 MiB pattern with min/avg/max ${params.minSize}/${params.avgSize}/${params.maxSize}`, expect: 'success', key: hex(k), repositoryId: hex(r), params, input: { pattern: input }, chunkLengths: lengths });
  }
  // Repetitive input: no cut point is ever found, so every chunk is maxSize.
  {
    const params = { minSize: 2048, avgSize: 8192, maxSize: 65536 };
    add({ name: 'chunker-zeros', kind: 'chunker', description: '1 MiB of zeros with min/avg/max 2048/8192/65536', expect: 'success', key: hex(K1), repositoryId: hex(R1), params, input: { zeros: 1 << 20 }, chunkLengths: (() => {
      const cdc = new FastCdc(gear, params);
      const z = new Uint8Array(1 << 20);
      const ls: number[] = [];
      for (let s = 0; s < z.length; ) {
        const l = cdc.cut(z, s, z.length, true);
        ls.push(l);
        s += l;
      }
      return ls;
    })() });
  }

  // --- §6.2 chunk IDs ---------------------------------------------------------------
  const ids: Array<[string, Uint8Array, Record<string, unknown>]> = [
    ['empty', new Uint8Array(0), { hex: '' }],
    ['abc', Buffer.from('abc'), { hex: hex(Buffer.from('abc')) }],
    ['64k-pattern', patternBytes(pat(S)), { pattern: pat(S) }],
  ];
  for (const [n, chunk, desc] of ids) {
    add({ name: `chunk-id-${n}`, kind: 'chunk-id', description: 'HMAC-SHA256 under the chunk-ID key of K1, R1', expect: 'success', key: hex(K1), repositoryId: hex(R1), chunk: desc, chunkId: hex(keys11.chunkId(chunk)) });
  }
  const keys11b = new RepositoryKeys(key1, R1, 'blake3');
  for (const [n, chunk, desc] of [...ids, ['1mib-pattern', patternBytes(pat(1 << 20)), { pattern: pat(1 << 20) }] as [string, Uint8Array, Record<string, unknown>]]) {
    add({ name: `chunk-id-blake3-${n}`, kind: 'chunk-id', description: 'version 4: keyed BLAKE3 (32-byte output) under the BLAKE3 chunk-ID key of K1, R1 (HKDF info coffer/backup/v4/chunk-id-blake3)', expect: 'success', function: 'blake3', key: hex(K1), repositoryId: hex(R1), chunk: desc, chunkId: hex(keys11b.chunkId(chunk)) });
  }
  formatV2Vectors(add as Parameters<typeof formatV2Vectors>[0]);
  add({ name: 'chunk-id-abc-other-repository', kind: 'chunk-id', description: 'the same chunk in repository R2 under the same key has another ID', expect: 'success', key: hex(K1), repositoryId: hex(R2), chunk: { hex: hex(Buffer.from('abc')) }, chunkId: hex(keys12.chunkId(Buffer.from('abc'))) });
  return out;
}

/** The vectors directory, resolved from this file (dist/test/vectors/), not from cwd. */
export const VECTORS_DIR = fileURLToPath(new URL('../../../../../spec/vectors/backup/', import.meta.url));

function main(): void {
  mkdirSync(VECTORS_DIR, { recursive: true });
  for (const f of readdirSync(VECTORS_DIR)) if (f.endsWith('.json')) rmSync(VECTORS_DIR + f);
  const vectors = generateVectors();
  for (const v of vectors) writeFileSync(`${VECTORS_DIR}${v.name}.json`, JSON.stringify(v, null, 2) + '\n');
  process.stdout.write(`wrote ${vectors.length} vectors to ${VECTORS_DIR}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
