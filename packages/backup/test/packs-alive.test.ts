/**
 * On a backend that keeps a pack's bytes until its commit (`keepsUntilCommit`: the relay's
 * retry spool, S3's buffered upload) a backup keeps at most three packs alive at once: the
 * one being filled and two being committed, so it holds at most three packs in memory
 * however slow its commits (issue 13: before, producers opened the next pack while
 * finished ones waited for an upload slot, and a backup of the chat set to the relay had
 * 8–10 uploads open, ~70 MiB of spool). On a backend that streams (a local file), at most
 * eight (an open descriptor each).
 *
 * The backend here is a real LocalBackend whose commits wait 40 ms first (a far relay);
 * it counts the pack writers between `create` and the end of `commit` or `abort`.
 */
import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BackupKey, CofferError, LocalBackend, PadMode, Repository, backup, check, restore, type ByteRange, type ObjectInfo, type ObjectWriter, type StorageBackend } from '../src/index.js';
import { BlobType } from '../src/repository/blob.js';
import { BlobWriter } from '../src/repository/blob-writer.js';
import { SMALL_CHUNKER, assertSameTree, prng, tempDir } from './fixtures/trees.js';

/** `n` deterministic incompressible bytes (an AES-CTR keystream under a key made from `seed`): fixtures' prng is a hash per 32 bytes, too slow for a hundred MiB. */
function stream(seed: number, n: number): Buffer {
  const key = createHash('sha256').update(`packs-alive ${seed}`).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
}

class SlowCommits implements StorageBackend {
  open = 0;
  maxOpen = 0;
  created = 0;
  /** Faults: the n-th pack's commit (1-based) fails, or the n-th create does. */
  failCommit = 0;
  failCreate = 0;
  constructor(
    readonly inner: StorageBackend,
    readonly delayMs: number,
    readonly keepsUntilCommit: boolean,
  ) {}
  get location(): string {
    return this.inner.location;
  }
  put(name: string, parts: readonly Uint8Array[]): Promise<void> {
    return this.inner.put(name, parts);
  }
  async create(name: string): Promise<ObjectWriter> {
    if (this.failCreate > 0 && this.created + 1 === this.failCreate) {
      this.created++;
      throw new CofferError('storage', `writing ${name} failed: the test's backend refused to start it`);
    }
    const w = await this.inner.create(name);
    this.created++;
    const nth = this.created;
    this.open++;
    this.maxOpen = Math.max(this.maxOpen, this.open);
    let ended = false;
    const end = () => {
      if (!ended) this.open--;
      ended = true;
    };
    return {
      write: (parts) => w.write(parts),
      commit: async () => {
        try {
          await sleep(this.delayMs);
          if (nth === this.failCommit) {
            await w.abort();
            throw new CofferError('storage', `writing ${name} failed: the test's backend refused to commit it`);
          }
          await w.commit();
        } finally {
          end();
        }
      },
      abort: async () => {
        try {
          await w.abort();
        } finally {
          end();
        }
      },
    };
  }
  get(name: string, range?: ByteRange): Promise<Uint8Array> {
    return this.inner.get(name, range);
  }
  stat(name: string): Promise<ObjectInfo | null> {
    return this.inner.stat(name);
  }
  list(prefix: string): Promise<ObjectInfo[]> {
    return this.inner.list(prefix);
  }
  delete(name: string): Promise<void> {
    return this.inner.delete(name);
  }
  sync(): Promise<void> {
    return this.inner.sync();
  }
}

async function slowRepo(t: Parameters<typeof tempDir>[0], keepsUntilCommit = true, delayMs = 40) {
  const dir = await tempDir(t, 'repo');
  const key = BackupKey.generate();
  const slow = new SlowCommits(new LocalBackend(dir), delayMs, keepsUntilCommit);
  const repo = await Repository.init(slow, key, { chunker: SMALL_CHUNKER });
  return { slow, repo };
}

for (const [padding, keeps, most] of [
  [PadMode.Off, true, 3],
  [PadMode.Max, true, 3],
  [PadMode.Off, false, 8],
] as const) {
  test(`blobs added many at once, ${keeps ? 'kept until commit' : 'streamed'}: at most ${most} packs alive, every blob reads back (padding ${PadMode[padding]})`, async (t) => {
    const { slow, repo } = await slowRepo(t, keeps);
    const writer = new BlobWriter(repo, () => false, padding, 'off');
    // 96 MiB of incompressible blobs: a dozen packs of 8 MiB, through both ways in.
    const blobs = Array.from({ length: 96 }, (_, i) => stream(1000 + i, 1024 * 1024));
    const ids = blobs.map((b) => repo.keys.chunkId(b));
    const adds: Promise<void>[] = [];
    for (let i = 0; i < blobs.length; i++) {
      if (i % 2 === 0) adds.push(writer.add(BlobType.Data, ids[i]!, blobs[i]!));
      else {
        const p = writer.addStoredNow(BlobType.Data, ids[i]!, blobs[i]!.length, blobs[i]!, 0);
        if (p) await p;
      }
    }
    await Promise.all(adds);
    await writer.finish();
    assert.ok(slow.created >= 10, `packs written: ${slow.created}`);
    assert.ok(slow.maxOpen <= most, `at most ${most} packs alive, saw ${slow.maxOpen}`);
    assert.equal(slow.open, 0);
    for (let i = 0; i < blobs.length; i += 7) assert.deepEqual(await repo.readBlob(ids[i]!), blobs[i], `blob ${i}`);
    const c = await check(repo, { readData: true });
    assert.deepEqual(c.problems, []);
  });
}

test("tree blobs compressed in the writer's one reused buffer, added while no pack may open: each read back as added", async (t) => {
  // Commits slower than a pack fills, so that blobs do wait for one.
  const { slow, repo } = await slowRepo(t, true, 400);
  const writer = new BlobWriter(repo, () => false, PadMode.Off, 'auto');
  // Compressible to about half (text and random bytes interleaved), 100 × ~600 KiB: several
  // packs, so that blobs compressed into the shared buffer wait for a pack to be committed.
  const blobs = Array.from({ length: 100 }, (_, i) => {
    const r = stream(5000 + i, 600_000); // one size: every blob is compressed into the same buffer
    for (let k = 0; k < r.length; k++) if ((k >> 6) % 2 === 1) r[k] = 0x61 + ((k * 7 + i) % 5);
    return r;
  });
  const ids = blobs.map((b) => repo.keys.chunkId(b));
  await Promise.all(blobs.map((b, i) => writer.add(BlobType.Tree, ids[i]!, b, true)));
  await writer.finish();
  assert.ok(slow.created >= 3, `packs written: ${slow.created}`);
  assert.ok(slow.maxOpen <= 3, `at most 3 packs alive, saw ${slow.maxOpen}`);
  for (let i = 0; i < blobs.length; i++) assert.deepEqual(await repo.readBlob(ids[i]!), blobs[i], `blob ${i}`);
});

for (const fault of ['commit', 'create'] as const) {
  test(`a pack's ${fault} failing while three packs are alive: the backup fails with that storage error, nothing waits for ever, and a next backup succeeds`, async (t) => {
    const src = await tempDir(t, 'src');
    await fs.mkdir(join(src, 'd'), { recursive: true });
    for (let i = 0; i < 5; i++) await fs.writeFile(join(src, 'd', `large-${i}.bin`), stream(900 + i, 8 * 1024 * 1024));
    const { slow, repo } = await slowRepo(t);
    if (fault === 'commit') slow.failCommit = 2;
    else slow.failCreate = 3;
    await assert.rejects(backup(repo, { paths: [join(src, 'd')] }), (e: unknown) => e instanceof CofferError && e.code === 'storage' && new RegExp(`refused to ${fault === 'commit' ? 'commit' : 'start'}`).test(e.message));
    assert.equal(slow.open, 0, 'every pack writer committed or aborted');
    slow.failCommit = 0;
    slow.failCreate = 0;
    const r = await backup(repo, { paths: [join(src, 'd')] });
    const out = await tempDir(t, 'out');
    await restore(repo, { id: r.id, snapshot: r.snapshot }, { target: out });
    await assertSameTree(join(src, 'd'), join(out, 'd'));
  });
}

test('a backup of large and small files to a backend with slow commits: at most three packs alive; it restores the same', async (t) => {
  const src = await tempDir(t, 'src');
  await fs.mkdir(join(src, 'd', 'small'), { recursive: true });
  for (let i = 0; i < 6; i++) await fs.writeFile(join(src, 'd', `large-${i}.bin`), stream(i, 8 * 1024 * 1024 + i * 4097));
  for (let i = 0; i < 400; i++) await fs.writeFile(join(src, 'd', 'small', `f${i}`), prng(100 + i, 500 + i * 37));
  const { slow, repo } = await slowRepo(t);
  const r = await backup(repo, { paths: [join(src, 'd')] });
  assert.ok(slow.created >= 6, `packs written: ${slow.created}`);
  assert.ok(slow.maxOpen <= 3, `at most 3 packs alive, saw ${slow.maxOpen}`);
  const out = await tempDir(t, 'out');
  await restore(repo, { id: r.id, snapshot: r.snapshot }, { target: out });
  await assertSameTree(join(src, 'd'), join(out, 'd'));
});
