/** The backup key and its human encoding (spec §3.1, §3.2). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { BackupKey, formatKeyId } from '../src/crypto/backup-key.js';
import { CofferError } from '../src/errors.js';
import { RepositoryKeys, chunkIdKeyOf, chunkIdUnder } from '../src/crypto/repository-keys.js';
import { createHmac, randomBytes } from 'node:crypto';
import { decodeConfig, encodeConfig, newConfig } from '../src/repository/config.js';
import { DEFAULT_CHUNKER } from '../src/chunker/fastcdc.js';
import { Compression } from '../src/repository/config.js';

const fixed = (b: number) => () => new Uint8Array(32).fill(b);
const K = BackupKey.fromBytes(Uint8Array.from({ length: 32 }, (_, i) => i));
const DIGITS = '0001 0203 0405 0607 0809 0a0b 0c0d 0e0f 1011 1213 1415 1617 1819 1a1b 1c1d 1e1f';

test('toDigits: 16 groups of 4 lowercase hex digits, single spaces', () => {
  assert.equal(K.toDigits(), DIGITS);
});

test('property: parse(toDigits(k)) is k, for keys from any rng', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (raw) => {
      const k = BackupKey.generate(() => raw);
      assert.ok(BackupKey.parse(k.toDigits()).equals(k));
      assert.deepEqual(BackupKey.parse(k.toDigits()).exportBytes(), raw);
    }),
  );
});

test('parse accepts any case, spaces, dashes and line breaks', () => {
  for (const t of [DIGITS.toUpperCase(), DIGITS.replace(/ /g, ''), DIGITS.replace(/ /g, '-'), DIGITS.replace(/ /g, ' - '), DIGITS.replace(/ /g, '\n'), `\t${DIGITS}\r\n`]) {
    assert.ok(BackupKey.parse(t).equals(K), JSON.stringify(t));
  }
});

test('a mistyped key is "not a valid key", saying what is wrong, and does not echo the key', () => {
  const cases: Array<[string, RegExp]> = [
    [DIGITS.slice(0, -1), /63 digits, a Coffer key has 64/],
    [DIGITS + '0', /65 digits/],
    ['', /0 digits/],
    [DIGITS.replace('0a0b', '0a0g'), /'g' is not a hex digit/],
    ['0x' + DIGITS, /'x' is not a hex digit/],
  ];
  for (const [t, why] of cases) {
    assert.throws(
      () => BackupKey.parse(t),
      (e) => CofferError.is(e, 'invalid-key') && /^that isn't a valid key: /.test(e.message) && why.test(e.message) && !e.message.includes('0203'),
      JSON.stringify(t),
    );
  }
});

test('a well-formed key that is not the repository\'s is "wrong key", never "invalid" or "corrupt"', () => {
  const mine = BackupKey.generate(fixed(1));
  const other = BackupKey.generate(fixed(2));
  const config = encodeConfig(mine, newConfig(mine, DEFAULT_CHUNKER, Compression.Zstd, () => Buffer.alloc(16, 7)));
  assert.throws(
    () => decodeConfig(BackupKey.parse(other.toDigits()), config, '/repo'),
    // Version 3: both key IDs as they are in this repository (salted with its ID, spec §3.2).
    (e) => CofferError.is(e, 'wrong-key') && e.message.includes(formatKeyId(mine.repositoryKeyId(Buffer.alloc(16, 7)))) && e.message.includes(formatKeyId(other.repositoryKeyId(Buffer.alloc(16, 7)))),
  );
});

test('the key never prints: String, template, JSON, util.inspect, console-style formatting', () => {
  const k = BackupKey.generate(fixed(0xab));
  const secret = 'abababab';
  for (const s of [String(k), `${k}`, JSON.stringify({ k }), inspect(k), inspect({ nested: { k } }, { depth: 5 }), inspect(k, { showHidden: true })]) {
    assert.ok(!s.includes(secret), s);
    assert.ok(s.includes('redacted'), s);
  }
});

test('fromBytes checks type and length; generate uses the injected rng', () => {
  assert.throws(() => BackupKey.fromBytes(new Uint8Array(31)), RangeError);
  assert.throws(() => BackupKey.fromBytes([1, 2] as unknown as Uint8Array), TypeError);
  assert.deepEqual(BackupKey.generate(fixed(5)).exportBytes(), new Uint8Array(32).fill(5));
});

test('exportBytes is a copy: changing it does not change the key', () => {
  const k = BackupKey.generate(fixed(3));
  const b = k.exportBytes();
  b[0] = 99;
  assert.equal(k.exportBytes()[0], 3);
});

test('key ID: 16 bytes, stable, different per key, not a prefix of the key', () => {
  const a = BackupKey.generate(fixed(1));
  assert.equal(a.keyId().length, 16);
  assert.deepEqual(a.keyId(), BackupKey.generate(fixed(1)).keyId());
  assert.notDeepEqual(a.keyId(), BackupKey.generate(fixed(2)).keyId());
  assert.ok(!Buffer.from(a.exportBytes()).toString('hex').includes(formatKeyId(a.keyId()).slice(0, 8)));
  assert.match(formatKeyId(a.keyId()), /^[0-9a-f]{32}$/);
});

test('chunkIdUnder with the chunk-ID key (the chunk workers and restore\'s threads) gives chunkId for every size, and depends on the key; HMAC-SHA256 or keyed BLAKE3 as the repository says', () => {
  for (const fn of ['hmac-sha256', 'blake3'] as const) {
    const id = BackupKey.generate();
    const repoId = randomBytes(32);
    const keys = new RepositoryKeys(id, repoId, fn);
    assert.equal(keys.chunkIdFunction, fn);
    const onThread = chunkIdKeyOf(structuredClone(keys.chunkIdSpec));
    for (const n of [0, 1, 63, 64, 65, 4096, 128 * 1024, 1024 * 1024 + 3]) {
      const chunk = randomBytes(n);
      assert.ok(chunkIdUnder(onThread, chunk).equals(keys.chunkId(chunk)), `${fn} size ${n}`);
    }
    const other = new RepositoryKeys(BackupKey.generate(), randomBytes(32), fn);
    const c = randomBytes(200_000);
    assert.ok(!other.chunkId(c).equals(chunkIdUnder(onThread, c)));
    // The two functions never agree, and BLAKE3's key has its own label (not the HMAC key).
    const hmac = new RepositoryKeys(id, repoId, 'hmac-sha256');
    const blake = new RepositoryKeys(id, repoId, 'blake3');
    assert.ok(!hmac.chunkId(c).equals(blake.chunkId(c)));
    assert.ok(!Buffer.from(hmac.chunkIdKey).equals(Buffer.from(blake.chunkIdKey)));
    assert.ok(hmac.chunkId(c).equals(createHmac('sha256', hmac.chunkIdKey).update(c).digest()));
  }
});

test('the BLAKE3 chunk-ID function is standard keyed BLAKE3: BLAKE3\'s own keyed_hash test vectors (first 32 bytes), through the same path as a thread\'s key', () => {
  // From test_vectors/test_vectors.json of the BLAKE3 reference repository (BLAKE3-team/BLAKE3,
  // version 1.8.6): the key is the ASCII string below, the input `len` bytes of 0, 1, …, 250, 0, 1, …
  const key = Buffer.from('whats the Elvish word for friend', 'ascii');
  const cases: Array<[number, string]> = [
    [0, '92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26'],
    [1, '6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b'],
    [63, 'bb1eb5d4afa793c1ebdd9fb08def6c36d10096986ae0cfe148cd101170ce37ae'],
    [64, 'ba8ced36f327700d213f120b1a207a3b8c04330528586f414d09f2f7d9ccb7e6'],
    [65, 'c0a4edefa2d2accb9277c371ac12fcdbb52988a86edc54f0716e1591b4326e72'],
    [1023, 'c951ecdf03288d0fcc96ee3413563d8a6d3589547f2c2fb36d9786470f1b9d6e'],
    [1024, '75c46f6f3d9eb4f55ecaaee480db732e6c2105546f1e675003687c31719c7ba4'],
    [1025, '357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69'],
    [2049, '9f29700902f7c86e514ddc4df1e3049f258b2472b6dd5267f61bf13983b78dd5'],
    [8193, '954a2a75420c8d6547e3ba5b98d963e6fa6491addc8c023189cc519821b4a1f5'],
    [16384, '9e9fc4eb7cf081ea7c47d1807790ed211bfec56aa25bb7037784c13c4b707b0d'],
    [102400, '1c35d1a5811083fd7119f5d5d1ba027b4d01c0c6c49fb6ff2cf75393ea5db4a7'],
  ];
  const k = chunkIdKeyOf(structuredClone({ fn: 'blake3' as const, key }));
  // In order, then backwards: the one hasher per thread is reset between chunks.
  for (const [len, want] of [...cases, ...cases.slice().reverse()]) {
    const input = Buffer.alloc(len);
    for (let i = 0; i < len; i++) input[i] = i % 251;
    assert.equal(chunkIdUnder(k, input).toString('hex'), want, `${len} bytes`);
  }
});
