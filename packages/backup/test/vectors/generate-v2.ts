/**
 * Vectors for format version 2 (spec §4, §7–§11): padding, packs, indexes, tree
 * listings, snapshots, locks and zstd blobs. Called by generate.ts; every input is fixed,
 * so the output is deterministic. Objects are built with the code under test *and*
 * described field by field, so another implementation can check either side.
 */
import { BackupKey } from '../../src/crypto/backup-key.js';
import { RepositoryKeys } from '../../src/crypto/repository-keys.js';
import { ObjectKind, openObject, sealObject } from '../../src/crypto/sealed-object.js';
import { BLOB_COMPRESSED, BLOB_PADDED, BlobType } from '../../src/repository/blob.js';
import { encodeIndex, type IndexedPack } from '../../src/repository/index-file.js';
import { PackBuilder } from '../../src/repository/pack.js';
import { PadMode, padBlob, paddedLength, paddedPackLength, padme } from '../../src/repository/padding.js';
import { encodeEntry, type TreeEntry } from '../../src/repository/tree.js';

type Expect = 'success' | 'corrupt' | 'unsupported-version';
interface V {
  name: string;
  kind: string;
  description: string;
  expect: Expect;
  [field: string]: unknown;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const seq = (n: number, from: number) => Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));
const K1 = seq(32, 0x00);
const R1 = seq(16, 0xa0);

/** zstd -3 of "hello " × 11 + "hello" (71 bytes): one frame, no content size, no checksum. */
export const ZSTD_HELLO = Buffer.from('28b52ffd00586500003068656c6c6f2001008e548a', 'hex');
export const HELLO = Buffer.from('hello '.repeat(11) + 'hello');
const SKIPPABLE = Buffer.from('502a4d180400000000000000', 'hex');

export function formatV2Vectors(add: (v: V) => void): void {
  const keys = new RepositoryKeys(BackupKey.fromBytes(K1), R1);
  const base = { key: hex(K1), repositoryId: hex(R1) };

  // --- §7.3 padding ---------------------------------------------------------------------
  const lengths = [0, 1, 2, 3, 4, 5, 9, 16, 17, 100, 1000, 1010, 1024, 1025, 4096, 65_536, 65_537, 524_289, 1_048_577, 8_388_609, 2 ** 32 + 1];
  add({
    name: 'padding-lengths',
    kind: 'padding',
    description: 'padded lengths: [L, auto (Padmé), max (next power of two)]',
    expect: 'success',
    lengths: lengths.map((L) => [L, padme(L), paddedLength(L, PadMode.Max)]),
  });
  add({
    name: 'padding-pack-lengths',
    kind: 'padding',
    description: 'padded pack plaintext lengths: [L, auto, max]; max makes every pack 8 MiB unless one blob is larger',
    expect: 'success',
    packLengths: [100, 8_388_607, 8_388_608, 8_388_609, 20_000_000].map((L) => [L, paddedPackLength(L, PadMode.Auto), paddedPackLength(L, PadMode.Max)]),
  });
  const padded = padBlob(Buffer.from('abc'), PadMode.Auto);
  add({ name: 'padding-blob', kind: 'padding', description: 'a 3-byte payload padded with auto: 3 + 4 → Padmé(7) = 7; trailer counts padding and itself', expect: 'success', payload: '616263', stored: hex(padded) });
  const badPad = Buffer.from(padBlob(Buffer.from('abc'), PadMode.Max));
  badPad[3] = 1;
  add({ name: 'padding-blob-nonzero', kind: 'padding', description: 'a padding byte that is not zero', expect: 'corrupt', stored: hex(badPad) });
  const overPad = Buffer.from(padded);
  overPad.writeUInt32BE(8, overPad.length - 4);
  add({ name: 'padding-blob-too-long', kind: 'padding', description: 'the trailer claims more padding than the blob holds', expect: 'corrupt', stored: hex(overPad) });
  add({ name: 'padding-blob-short', kind: 'padding', description: 'a padding trailer below 4 (it counts itself)', expect: 'corrupt', stored: hex(Buffer.from('61626300000003', 'hex')) });

  // --- §7.2 zstd ------------------------------------------------------------------------
  const z = (name: string, expect: Expect, description: string, stored: Buffer, flags: number, rawLength: number) =>
    add({ name: `zstd-${name}`, kind: 'zstd', description, expect, stored: hex(stored), flags, rawLength, ...(expect === 'success' ? { raw: hex(HELLO.length === rawLength ? HELLO : Buffer.alloc(0)) } : {}) });
  z('frame', 'success', 'one zstd frame without content size or checksum: readers must decode it as a stream', ZSTD_HELLO, BLOB_COMPRESSED, HELLO.length);
  z('padded', 'success', 'the same frame, padded (flags 3)', padBlob(ZSTD_HELLO, PadMode.Auto), BLOB_COMPRESSED | BLOB_PADDED, HELLO.length);
  z('trailing-bytes', 'corrupt', 'the frame followed by 3 bytes', Buffer.concat([ZSTD_HELLO, Buffer.from([1, 2, 3])]), BLOB_COMPRESSED, HELLO.length);
  z('skippable-after', 'corrupt', 'the frame followed by a skippable frame (libzstd alone would accept it)', Buffer.concat([ZSTD_HELLO, SKIPPABLE]), BLOB_COMPRESSED, HELLO.length);
  z('skippable-before', 'corrupt', 'a skippable frame, then the frame', Buffer.concat([SKIPPABLE, ZSTD_HELLO]), BLOB_COMPRESSED, HELLO.length);
  z('two-frames', 'corrupt', 'two frames (together the right length)', Buffer.concat([ZSTD_HELLO, ZSTD_HELLO]), BLOB_COMPRESSED, 2 * HELLO.length);
  z('truncated', 'corrupt', 'the frame missing its last byte', ZSTD_HELLO.subarray(0, ZSTD_HELLO.length - 1), BLOB_COMPRESSED, HELLO.length);
  z('wrong-length', 'corrupt', 'decodes to 71 bytes, raw length says 70', ZSTD_HELLO, BLOB_COMPRESSED, HELLO.length - 1);

  // --- §7 packs ----------------------------------------------------------------------------
  const tree = Buffer.from('{"path":"r","type":"dir","mode":493,"mtime":0,"mtimeNs":0}\n');
  const blobs: Array<{ type: BlobType; raw: Buffer; payload: Buffer; flags: number }> = [
    { type: BlobType.Data, raw: Buffer.from('abc'), payload: Buffer.from('abc'), flags: 0 },
    { type: BlobType.Data, raw: HELLO, payload: ZSTD_HELLO, flags: BLOB_COMPRESSED },
    { type: BlobType.Tree, raw: tree, payload: tree, flags: 0 },
  ];
  const packId = seq(32, 0x90);
  const builder = new PackBuilder(keys.objectMaster, packId);
  for (const b of blobs) {
    const stored = b.type === BlobType.Tree ? b.payload : padBlob(b.payload, PadMode.Auto);
    const flags = b.type === BlobType.Tree ? b.flags : b.flags | BLOB_PADDED;
    builder.add({ id: keys.chunkId(b.raw), type: b.type, flags, storedLength: stored.length, rawLength: b.raw.length }, stored);
  }
  const done = builder.finish(PadMode.Auto);
  const sealedPack = Buffer.concat(done.parts);
  const plain = Buffer.from(
    // The plaintext, for vectors that edit it: opened back from the sealed pack.
    sealedPlain(keys.objectMaster, packId, sealedPack),
  );
  const packEntries = done.entries.map((e, i) => ({ id: hex(e.id), type: e.type, flags: e.flags, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength, raw: hex(blobs[i]!.raw) }));
  add({
    name: 'pack-v2',
    kind: 'pack',
    description: 'a version 2 pack ("CFP2") of K1/R1 with a padded raw data blob, a padded zstd data blob and an unpadded tree blob, padded to Padmé length; sealed as object 90 91 … af',
    expect: 'success',
    ...base,
    packId: hex(packId),
    sealed: hex(sealedPack),
    plaintext: hex(plain),
    entries: packEntries,
  });
  const edit = (f: (b: Buffer) => void) => {
    const b = Buffer.from(plain);
    f(b);
    return b;
  };
  const trailerStart = plain.length - 12 - 3 * 42;
  const p = (name: string, expect: Expect, description: string, bytes: Buffer) => add({ name: `pack-${name}`, kind: 'pack', description, expect, ...base, plaintext: hex(bytes) });
  p('padding-nonzero', 'corrupt', 'a byte of the padding before the trailer set', edit((b) => (b[trailerStart - 1] = 1)));
  p('unknown-flag', 'corrupt', 'blob flags 4 (unknown)', edit((b) => (b[trailerStart + 33] = 4)));
  p('lengths-do-not-add-up', 'corrupt', 'padding length one more than the bytes between the blobs and the trailer', edit((b) => b.writeUInt32BE(b.readUInt32BE(b.length - 12) + 1, b.length - 12)));
  p('padded-too-short', 'corrupt', 'an uncompressed padded blob whose stored length is less than raw length + 4', edit((b) => b.writeUInt32BE(b.readUInt32BE(trailerStart + 34) - 3, trailerStart + 38)));
  p('v1-with-padded-flag', 'corrupt', 'a version 1 trailer ("CFPK") whose blob has the padded flag (version 1 knows flag 1 only)', (() => {
    const e = Buffer.alloc(42);
    keys.chunkId(Buffer.from('abc')).copy(e);
    e[33] = BLOB_PADDED;
    e.writeUInt32BE(7, 34);
    e.writeUInt32BE(3, 38);
    return Buffer.concat([padBlob(Buffer.from('abc'), PadMode.Auto), e, Buffer.from('00000001', 'hex'), Buffer.from('CFPK')]);
  })());
  p('v1', 'success', 'a version 1 pack ("CFPK", no padding) with one raw blob "abc"', (() => {
    const e = Buffer.alloc(42);
    keys.chunkId(Buffer.from('abc')).copy(e);
    e.writeUInt32BE(3, 34);
    e.writeUInt32BE(3, 38);
    return Buffer.concat([Buffer.from('abc'), e, Buffer.from('00000001', 'hex'), Buffer.from('CFPK')]);
  })());

  // --- §8 indexes ----------------------------------------------------------------------------
  const indexed: IndexedPack[] = [{ packId, sealedLength: sealedPack.length, blobs: done.entries }];
  const index = encodeIndex(indexed, 2, PadMode.Auto);
  const indexDecoded = [{ packId: hex(packId), sealedLength: sealedPack.length, blobs: done.entries.map((e) => ({ id: hex(e.id), type: e.type, flags: e.flags, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength })) }];
  const ix = (name: string, expect: Expect, description: string, bytes: Buffer, decoded: unknown = indexDecoded) =>
    add({ name: `index-${name}`, kind: 'index', description, expect, plaintext: hex(bytes), ...(expect === 'success' ? { decoded } : {}) });
  const abc = { id: keys.chunkId(Buffer.from('abc')), type: BlobType.Data, flags: 0, offset: 0, storedLength: 3, rawLength: 3 };
  const indexedV1: IndexedPack[] = [{ packId, sealedLength: 99, blobs: [abc] }];
  const v1Decoded = [{ packId: hex(packId), sealedLength: 99, blobs: [{ ...abc, id: hex(abc.id) }] }];
  ix('v2', 'success', 'a version 2 index of pack-v2, padded with zero bytes to Padmé length', index);
  ix('v1', 'success', 'a version 1 index (no padding) of one raw blob "abc"', encodeIndex(indexedV1, 1), v1Decoded);
  ix('v1-padded-flag', 'corrupt', 'a version 1 index naming a padded blob (version 1 knows flag 1 only)', encodeIndex(indexed, 1));
  ix('v1-trailing', 'corrupt', 'a version 1 index with one zero byte appended', Buffer.concat([encodeIndex(indexedV1, 1), Buffer.alloc(1)]));
  ix('padding-nonzero', 'corrupt', 'version 2 with its last padding byte set', Buffer.concat([index.subarray(0, index.length - 1), Buffer.from([1])]));
  ix('short', 'corrupt', '11 bytes with a good magic: shorter than the 12-byte head', index.subarray(0, 11));
  ix('bad-magic', 'corrupt', '"CFIY"', Buffer.concat([Buffer.from('CFIY'), index.subarray(4)]));
  ix('version-3', 'unsupported-version', 'index version 3', Buffer.concat([index.subarray(0, 4), Buffer.from([3]), index.subarray(5)]));
  ix('reserved', 'corrupt', 'reserved byte 7 set', Buffer.concat([index.subarray(0, 7), Buffer.from([1]), index.subarray(8)]));
  ix('sealed-length-too-large', 'corrupt', 'a pack sealed length of 2^53', (() => {
    const b = Buffer.from(index);
    b.writeBigUInt64BE(2n ** 53n, 12 + 32);
    return b;
  })());
  ix('truncated-entries', 'corrupt', 'version 1, entry count one higher than the entries present', (() => {
    const b = Buffer.from(encodeIndex(indexedV1, 1));
    b.writeUInt32BE(2, 12 + 40);
    return b;
  })());

  // --- §9 tree listings ----------------------------------------------------------------------
  const e = (x: Partial<TreeEntry> & { rawPath: Buffer; type: TreeEntry['type'] }): TreeEntry =>
    ({ path: x.rawPath.toString('utf8'), mode: 0o644, mtimeNs: 1_700_000_000_123_456_789n, owner: { uid: 1000, gid: 1000, user: 'ann', group: 'ann' }, ...x }) as TreeEntry;
  const r = (s: string | Buffer) => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s);
  const cafe = Buffer.concat([r('r/caf'), Buffer.from([0xe9])]);
  const listing: TreeEntry[] = [
    e({ rawPath: r('r'), type: 'dir', mode: 0o755, mtimeNs: -1_500_000_000n }),
    e({ rawPath: r('r/a b'), type: 'file', size: 3, chunks: [hex(keys.chunkId(Buffer.from('abc')))], inode: '', ctime: '', xattrs: [{ name: 'user.note', value: Buffer.from([0, 0xff]) }] } as Partial<TreeEntry> & { rawPath: Buffer; type: 'file' }),
    e({ rawPath: cafe, type: 'file', mode: 0o4755, size: 0, chunks: [], sparse: true, inode: '12', ctime: '1700000000000000000' } as Partial<TreeEntry> & { rawPath: Buffer; type: 'file' }),
    e({ rawPath: r('r/chr'), type: 'chardev', mode: 0o620, major: 1, minor: 3 } as Partial<TreeEntry> & { rawPath: Buffer; type: 'chardev' }),
    e({ rawPath: r('r/fifo'), type: 'fifo', mode: 0o600 }),
    e({ rawPath: r('r/link'), type: 'symlink', mode: 0o777, target: cafe.subarray(2) } as Partial<TreeEntry> & { rawPath: Buffer; type: 'symlink' }),
    e({ rawPath: r('r/x\u2028y'), type: 'socket', mode: 0o755 }),
    e({ rawPath: r('r/z'), type: 'hardlink', link: r('r/a b') } as Partial<TreeEntry> & { rawPath: Buffer; type: 'hardlink' }),
  ];
  const text = Buffer.from(listing.map(encodeEntry).join(''), 'utf8');
  const describe = (t: TreeEntry) => {
    const o: Record<string, unknown> = { path: hex(t.rawPath), type: t.type, mode: t.mode, mtimeNs: String(t.mtimeNs) };
    if (t.owner) o.owner = t.owner;
    if (t.xattrs) o.xattrs = t.xattrs.map((x) => [x.name, hex(x.value)]);
    if (t.type === 'file') Object.assign(o, { size: t.size, chunks: t.chunks, sparse: t.sparse === true });
    if (t.type === 'symlink') o.target = hex(t.target);
    if (t.type === 'hardlink') o.link = hex(t.link);
    if (t.type === 'chardev' || t.type === 'blockdev') Object.assign(o, { major: t.major, minor: t.minor });
    return o;
  };
  const tv = (name: string, version: 1 | 2, expect: Expect, description: string, bytes: Buffer, entries?: TreeEntry[]) =>
    add({ name: `tree-${name}`, kind: 'tree', description, expect, version, listing: hex(bytes), ...(entries ? { entries: entries.map(describe) } : {}) });
  tv('v2', 2, 'success', 'a version 2 listing: every entry type, a name that is not UTF-8 (path64), a name with a raw U+2028, xattrs, owners, a time before 1970, a sparse setuid file', text, listing);
  const line = (o: Record<string, unknown>) => JSON.stringify(o) + '\n';
  const dirLine = (path: string, extra: Record<string, unknown> = {}) => line({ path, type: 'dir', mode: 493, mtime: 0, mtimeNs: 0, ...extra });
  tv('v2-mode-as-493.0', 2, 'success', 'numbers are compared by value: "mode":493.0 and "mtime":0e0 are the integers 493 and 0', Buffer.from('{"path":"r","type":"dir","mode":493.0,"mtime":0e0,"mtimeNs":0}\n'), [e({ rawPath: r('r'), type: 'dir', mode: 0o755, mtimeNs: 0n, owner: undefined })]);
  tv('v2-duplicate', 2, 'corrupt', 'the same path twice', Buffer.from(dirLine('r') + dirLine('r/a') + dirLine('r/a')));
  tv('v2-child-first', 2, 'corrupt', 'a child before its parent', Buffer.from(dirLine('r/a') + dirLine('r')));
  tv('v2-no-parent', 2, 'corrupt', 'a child whose parent is a file, not a dir', Buffer.from(dirLine('r') + line({ path: 'r/f', type: 'file', mode: 420, mtime: 0, mtimeNs: 0, size: 0, chunks: [] }) + dirLine('r/f/x')));
  tv('v2-utf16-order', 2, 'corrupt', 'siblings in UTF-16 code-unit order (U+1F600 before U+FF5E): version 2 orders names by bytes (EF BD 9E before F0 9F 98 80)', Buffer.from(dirLine('r') + dirLine('r/\u{1F600}') + dirLine('r/\uFF5E')));
  tv('v2-byte-order', 2, 'success', 'the same two siblings in byte order', Buffer.from(dirLine('r') + dirLine('r/\uFF5E') + dirLine('r/\u{1F600}')), [
    e({ rawPath: r('r'), type: 'dir', mode: 0o755, mtimeNs: 0n, owner: undefined }),
    e({ rawPath: r('r/\uFF5E'), type: 'dir', mode: 0o755, mtimeNs: 0n, owner: undefined }),
    e({ rawPath: r('r/\u{1F600}'), type: 'dir', mode: 0o755, mtimeNs: 0n, owner: undefined }),
  ]);
  tv('v2-hardlink-forward', 2, 'corrupt', 'a hard link to a file that comes later', Buffer.from(dirLine('r') + line({ path: 'r/a', type: 'hardlink', mode: 420, mtime: 0, mtimeNs: 0, link: 'r/b' }) + line({ path: 'r/b', type: 'file', mode: 420, mtime: 0, mtimeNs: 0, size: 0, chunks: [] })));
  tv('v2-path-and-path64', 2, 'corrupt', 'both path and path64', Buffer.from(line({ path: 'r', path64: 'cg==', type: 'dir', mode: 493, mtime: 0, mtimeNs: 0 })));
  tv('v2-path64-utf8', 2, 'corrupt', 'path64 holding UTF-8 bytes (must be written as path)', Buffer.from(line({ path64: 'cg==', type: 'dir', mode: 493, mtime: 0, mtimeNs: 0 })));
  tv('v2-mtimens-range', 2, 'corrupt', 'mtimeNs 1000000000', Buffer.from(dirLine('r', { mtimeNs: 1_000_000_000 })));
  tv('v2-mtime-fraction', 2, 'corrupt', 'mtime 1.5 (version 2 seconds are integers)', Buffer.from(dirLine('r', { mtime: 1.5 })));
  tv('v2-xattrs-unsorted', 2, 'corrupt', 'xattrs not sorted by name', Buffer.from(dirLine('r', { xattrs: [['user.b', ''], ['user.a', '']] })));
  tv('v2-nan', 2, 'corrupt', 'NaN is not JSON', Buffer.from('{"path":"r","type":"dir","mode":493,"mtime":NaN,"mtimeNs":0}\n'));
  tv('v2-invalid-utf8', 2, 'corrupt', 'a byte FF inside a JSON string', Buffer.concat([Buffer.from('{"path":"r'), Buffer.from([0xff]), Buffer.from('","type":"dir","mode":493,"mtime":0,"mtimeNs":0}\n')]));
  tv('v2-no-final-newline', 2, 'corrupt', 'the last line lacks its 0x0A', Buffer.from(dirLine('r').trimEnd()));
  tv('v2-dotdot', 2, 'corrupt', 'a ".." segment', Buffer.from(dirLine('r') + dirLine('r/..')));
  tv('v2-too-long', 2, 'corrupt', 'a path of 4097 bytes', Buffer.from(dirLine('r') + dirLine(`r/${'é'.repeat(2047)}a`)));
  tv('v2-max-length', 2, 'success', 'a path of exactly 4096 bytes (2047 two-byte characters after "r/")', Buffer.from(dirLine('r') + dirLine(`r/${'é'.repeat(2047)}`)), [
    e({ rawPath: r('r'), type: 'dir', mode: 0o755, mtimeNs: 0n, owner: undefined }),
    e({ rawPath: r(`r/${'é'.repeat(2047)}`), type: 'dir', mode: 0o755, mtimeNs: 0n, owner: undefined }),
  ]);
  tv('v1', 1, 'success', 'a version 1 listing: millisecond mtimes with a fraction, a symlink', Buffer.from(line({ path: 'r', type: 'dir', mode: 493, mtime: 1700000000123.5 }) + line({ path: 'r/l', type: 'symlink', mode: 511, mtime: 0, target: 'x' })), [
    e({ rawPath: r('r'), type: 'dir', mode: 0o755, mtimeNs: 1_700_000_000_123_500_000n, owner: undefined }),
    e({ rawPath: r('r/l'), type: 'symlink', mode: 0o777, mtimeNs: 0n, owner: undefined, target: r('x') } as Partial<TreeEntry> & { rawPath: Buffer; type: 'symlink' }),
  ]);

  // --- §10 snapshots, §11 locks ---------------------------------------------------------------
  const snap = { version: 2, time: '2026-11-29T12:00:00.000Z', hostname: 'host', username: 'ann', paths: ['/home/ann/r'], tags: ['t'], tree: [hex(keys.chunkId(text))], stats: { files: 2, dirs: 1, bytes: 3, addedBytes: 100, newChunks: 3 } };
  const json = Buffer.from(JSON.stringify(snap));
  const sv = (name: string, expect: Expect, description: string, bytes: Buffer) => add({ name: `snapshot-${name}`, kind: 'snapshot', description, expect, plaintext: hex(bytes), ...(expect === 'success' ? { decoded: snap } : {}) });
  sv('v2-padded', 'success', 'JSON followed by 0x20 bytes up to its Padmé length', Buffer.concat([json, Buffer.alloc(padme(json.length) - json.length, 0x20)]));
  sv('version-3', 'unsupported-version', 'version 3', Buffer.from(JSON.stringify({ ...snap, version: 3 })));
  sv('version-string', 'corrupt', 'version "2" (a string)', Buffer.from(JSON.stringify({ ...snap, version: '2' })));
  sv('padded-with-nul', 'corrupt', 'padding of 0x00 bytes instead of 0x20', Buffer.concat([json, Buffer.alloc(8)]));
  sv('invalid-utf8', 'corrupt', 'a byte FF in the host name', Buffer.from(JSON.stringify(snap).replace('"host"', '"ho\u00ffst"'), 'latin1'));
  // Written by `coffer copy`: `original` names the snapshot it was copied from.
  const copied = { ...snap, original: 'a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf' };
  add({ name: 'snapshot-copied', kind: 'snapshot', description: 'a copied snapshot: "original" is the 64-hex ID of the snapshot it was copied from', expect: 'success', plaintext: hex(Buffer.from(JSON.stringify(copied))), decoded: copied });
  sv('original-not-hex', 'corrupt', '"original" that is not a 64-hex snapshot ID', Buffer.from(JSON.stringify({ ...snap, original: 'A0A1' })));
  const lock = { exclusive: false, hostname: 'host', pid: 4242, time: 1_800_000_000_000, expires: 1_800_001_800_000 };
  const lj = Buffer.from(JSON.stringify(lock));
  add({ name: 'lock-v2-padded', kind: 'lock', description: 'a lock body padded like a snapshot; sealed as kind 4 with object ID 90 91 … af', expect: 'success', ...base, objectId: hex(packId), plaintext: hex(Buffer.concat([lj, Buffer.alloc(padme(lj.length) - lj.length, 0x20)])), sealed: hex(sealObject(keys.objectMaster, { kind: ObjectKind.Lock, id: packId }, Buffer.concat([lj, Buffer.alloc(padme(lj.length) - lj.length, 0x20)]))), decoded: lock });
}

function sealedPlain(master: Uint8Array, id: Buffer, sealed: Buffer): Buffer {
  return openObject(master, { kind: ObjectKind.Pack, id }, sealed);
}
