/** The repository config (spec §4): errors in the order that helps the user most. */
import assert from 'node:assert/strict';
import type { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LocalBackend, Repository, backup, check, restore } from '../src/index.js';
import { RepositoryKeys } from '../src/crypto/repository-keys.js';
import { BackupKey } from '../src/crypto/backup-key.js';
import { DEFAULT_CHUNKER } from '../src/chunker/fastcdc.js';
import { CONFIG_BYTES, CONFIG_V3_BYTES, Compression, READABLE_VERSIONS, decodeConfig, encodeConfig, newConfig, type RepositoryConfig } from '../src/repository/config.js';
import { CofferError, type CofferErrorCode } from '../src/errors.js';
import { bytes } from './helpers.js';

const key = BackupKey.fromBytes(bytes(32, 1));
const other = BackupKey.fromBytes(bytes(32, 2));
const config = newConfig(key, { minSize: 4096, avgSize: 16384, maxSize: 65536 }, Compression.Zstd, (() => bytes(16, 3)) as unknown as typeof randomBytes);
const good = Buffer.from(encodeConfig(key, config));
/** The same repository as a version 2 config (unsalted key ID, 88 bytes), as older coffers wrote. */
const configV2: RepositoryConfig = { version: 2, repositoryId: config.repositoryId, keyId: key.keyId(), chunker: config.chunker, compression: config.compression, padding: config.padding };
const goodV2 = Buffer.from(encodeConfig(key, configV2));
const goodV3 = Buffer.from(encodeConfig(key, { ...config, version: 3 }));

const code = (k: BackupKey, b: Uint8Array): CofferErrorCode | 'ok' => {
  try {
    decodeConfig(k, b, '/repo');
    return 'ok';
  } catch (e) {
    assert.ok(e instanceof CofferError, String(e));
    assert.ok(e.message.includes('/repo'), `names where: ${e.message}`);
    return e.code;
  }
};

test('round trip: a version 4 config of 120 bytes (version 3\'s layout), a version 2 one of 88, decode to what was encoded', () => {
  assert.equal(config.version, 4);
  assert.deepEqual(decodeConfig(key, goodV3, '/repo'), { ...config, version: 3, repositoryId: Uint8Array.from(config.repositoryId), keyId: Uint8Array.from(config.keyId) });
  assert.equal(good.length, CONFIG_V3_BYTES);
  const d = decodeConfig(key, good, '/repo');
  assert.deepEqual(d, { ...config, repositoryId: Uint8Array.from(config.repositoryId), keyId: Uint8Array.from(config.keyId) });
  assert.equal(goodV2.length, CONFIG_BYTES);
  assert.deepEqual(decodeConfig(key, goodV2, '/repo'), { ...configV2, repositoryId: Uint8Array.from(config.repositoryId), keyId: Uint8Array.from(key.keyId()) });
  assert.equal(decodeConfig(key, encodeConfig(key, { ...config, compression: Compression.None }), 'x').compression, Compression.None);
});

test('newConfig uses the injected rng and the default chunker is valid', () => {
  assert.deepEqual(config.repositoryId, Uint8Array.from(bytes(16, 3)));
  assert.deepEqual(config.keyCheckNonce, Uint8Array.from(bytes(16, 3)));
  assert.doesNotThrow(() => encodeConfig(key, newConfig(key, DEFAULT_CHUNKER, Compression.Zstd)));
});

test('wrong key → wrong-key, before anything else is looked at (versions 2 and 3)', () => {
  for (const g of [good, goodV2]) {
    assert.equal(code(other, g), 'wrong-key');
    // Even when the rest is damaged: the key is checked before the MAC and the fields.
    for (const i of [8, 23, 40, 44, 52, 56, 71, 72, 87, g.length - 1]) {
      const c = Buffer.from(g);
      c[i]! ^= 0xff;
      assert.equal(code(other, c), 'wrong-key', `version ${g[4]}, byte ${i}`);
    }
  }
});

test('right key, any one byte damaged → the one right diagnosis (versions 2, 3 and 4)', () => {
  for (const g of [good, goodV3, goodV2]) {
    for (let i = 0; i < g.length; i++) {
      for (const x of [0x01, 0x80]) {
        const c = Buffer.from(g);
        c[i]! ^= x;
        // Byte 4: 3 ^ 1 = 2 and 2 ^ 1 = 3 are readable versions of the other size; 4 ^ 1 = 5 is not a version.
        const want = i < 4 ? 'not-a-repository' : i === 4 ? (READABLE_VERSIONS.includes(g[4]! ^ x) ? 'corrupt' : 'unsupported-version') : 'corrupt';
        assert.equal(code(key, c), want, `version ${g[4]}, byte ${i} ^ ${x}`);
      }
    }
  }
});

test('a damaged key ID or repository ID with the right key is corrupt, not "wrong key"', () => {
  for (const i of [8, 17, 23, 24, 30, 39]) {
    const c = Buffer.from(good);
    c[i]! ^= 0x04;
    assert.equal(code(key, c), 'corrupt', `byte ${i}`);
    assert.equal(code(other, c), 'wrong-key', `byte ${i}`);
  }
});

test('version 3: the key ID is salted with the repository ID; the key check links nothing', () => {
  const second = newConfig(key, config.chunker, Compression.Zstd);
  const a = Buffer.from(good);
  const b = Buffer.from(encodeConfig(key, second));
  assert.ok(!a.subarray(24, 40).equals(b.subarray(24, 40)), 'key IDs differ between repositories of one key');
  assert.ok(!a.subarray(56, 88).equals(b.subarray(56, 88)), 'key checks differ too');
  assert.deepEqual(decodeConfig(key, b, 'x').keyId, key.repositoryKeyId(second.repositoryId));
  assert.ok(!Buffer.from(key.repositoryKeyId(config.repositoryId)).equals(Buffer.from(key.keyId())), 'not the unsalted key ID');
  // Neither the unsalted key ID nor anything else constant per key appears in either config.
  for (const cfg of [a, b]) assert.equal(cfg.indexOf(Buffer.from(key.keyId())), -1);
  // A wrong key's message names this repository's key ID, not the key's global one.
  assert.throws(() => decodeConfig(other, a, '/repo'), (e: Error) => e.message.includes(Buffer.from(a.subarray(24, 40)).toString('hex')));
});

test('version 5 (of any size) → unsupported-version; wrong size → corrupt; a version 4 config relabelled 3 (or back) is corrupt', () => {
  const relabelled = Buffer.from(good);
  relabelled[4] = 3;
  assert.equal(code(key, relabelled), 'corrupt');
  const back = Buffer.from(goodV3);
  back[4] = 4;
  assert.equal(code(key, back), 'corrupt');
  for (const g of [good, goodV2]) {
    const v4 = Buffer.from(g);
    v4[4] = 5;
    assert.equal(code(key, v4), 'unsupported-version');
    assert.equal(code(key, Buffer.concat([v4, Buffer.alloc(40)])), 'unsupported-version');
    assert.equal(code(key, g.subarray(0, g.length - 1)), 'corrupt');
    assert.equal(code(key, Buffer.concat([g, Buffer.of(0)])), 'corrupt');
  }
});

test('garbage → not-a-repository', () => {
  for (const b of [Buffer.alloc(0), Buffer.from('CFR'), Buffer.from('{"version":1}'), bytes(88, 9), Buffer.from('CFOB\x01\x01\x10\x00')]) {
    assert.equal(code(key, b), 'not-a-repository', b.toString('hex').slice(0, 20));
  }
});

test('a whole version 2 repository (spec vector) still opens, takes a backup and restores it; its config stays version 2', async (t) => {
  const repos = fileURLToPath(new URL('../../../../spec/vectors/backup/repositories/', import.meta.url));
  const v = JSON.parse(await readFile(join(repos, 'v2.json'), 'utf8')) as { key: string; directory: string };
  const work = await mkdtemp(join(tmpdir(), 'coffer-v2-still-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  const dir = join(work, 'repo');
  await cp(join(repos, v.directory), dir, { recursive: true });
  const before = await readFile(join(dir, 'config'));
  const k = BackupKey.fromBytes(Buffer.from(v.key, 'hex'));
  const repo = await Repository.open(new LocalBackend(dir), k);
  assert.equal(repo.config.version, 2);
  assert.deepEqual(repo.config.keyId, Uint8Array.from(k.keyId()), 'a version 2 repository shows the unsalted key ID');
  await writeFile(join(work, 'new.txt'), 'written by a version 3 coffer');
  const r = await backup(repo, { paths: [join(work, 'new.txt')] });
  await restore(repo, { id: r.id, snapshot: r.snapshot } as never, { target: join(work, 'out') });
  assert.equal(await readFile(join(work, 'out', 'new.txt'), 'utf8'), 'written by a version 3 coffer');
  assert.ok((await readFile(join(dir, 'config'))).equals(before), 'the config is not rewritten');
  assert.equal(code(other, before), 'wrong-key');
});

test('chunk IDs follow the version for life: a new repository (version 4) names its blobs by keyed BLAKE3, a version 3 one by HMAC-SHA256, through backup, check --read-data and restore', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'coffer-ids-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  const src = join(work, 'src');
  await cp(fileURLToPath(new URL('.', import.meta.url)), src, { recursive: true, filter: (p) => !p.includes('vectors') });
  await writeFile(join(src, 'big.bin'), Buffer.alloc(3 << 20, 7));
  for (const [version, fn] of [[4, 'blake3'], [3, 'hmac-sha256']] as const) {
    const dir = join(work, `repo${version}`);
    const k = BackupKey.generate();
    if (version === 3) {
      await Repository.init(new LocalBackend(dir), k).then(async (r) => {
        // Rewritten as version 3 before anything is stored: a repository as an older coffer made it.
        await writeFile(join(dir, 'config'), encodeConfig(k, { ...r.config, version: 3 }));
      });
    } else await Repository.init(new LocalBackend(dir), k);
    const repo = await Repository.open(new LocalBackend(dir), k);
    assert.equal(repo.config.version, version);
    assert.equal(repo.keys.chunkIdFunction, fn);
    const r = await backup(repo, { paths: [src] });
    // The root tree blob's ID is the keyed function of its bytes, computed here independently.
    const treeId = Buffer.from(r.snapshot.tree[0]!, 'hex');
    const raw = await repo.readBlob(treeId);
    const want = new RepositoryKeys(k, repo.config.repositoryId, fn).chunkId(raw);
    assert.ok(want.equals(treeId), `${fn}: the tree blob's ID`);
    const other = new RepositoryKeys(k, repo.config.repositoryId, fn === 'blake3' ? 'hmac-sha256' : 'blake3').chunkId(raw);
    assert.ok(!other.equals(want));
    const again = await Repository.open(new LocalBackend(dir), k);
    const report = await check(again, { readData: true });
    assert.deepEqual(report.problems, [], `${fn}: check --read-data`);
    await restore(again, { id: r.id, snapshot: r.snapshot } as never, { target: join(work, `out${version}`) });
    assert.ok((await readFile(join(work, `out${version}`, 'src', 'big.bin'))).equals(Buffer.alloc(3 << 20, 7)));
  }
});
