/**
 * Issue 13: a chunk worker reuses its read buffers (one for whole files, a few for
 * batches of small files). Reuse must never let one file's bytes, or its chunk ID, come
 * from another's: one worker, files and batches of different sizes and contents one
 * after another, every returned byte and ID checked against the file.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { decompress } from '@mongodb-js/zstd';
import { ChunkPool, SMALL_STATUS, SmallStatus } from '../src/chunker/chunk-pool.js';
import { DEFAULT_CHUNKER } from '../src/chunker/fastcdc.js';
import { BLOB_COMPRESSED } from '../src/repository/blob.js';

const key = randomBytes(32);
const gear = randomBytes(1024);
const idOf = (b: Uint8Array) => createHmac('sha256', key).update(b).digest();

/** Half compressible, half random, so both stored forms come back. */
function content(seed: number, size: number): Buffer {
  return seed % 2 === 0 ? Buffer.alloc(size, `file ${seed} `) : randomBytes(size);
}

test('reused read buffers: each file of each batch and each whole file comes back as itself', async (t) => {
  const dir = await fs.mkdtemp(join(tmpdir(), 'coffer-chunkbuf-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const pool = new ChunkPool(ChunkPool.setupFor(gear, { fn: 'hmac-sha256', key }, DEFAULT_CHUNKER, 'auto'), 1);
  t.after(() => pool.close());
  let seed = 0;
  // Batches: large then smaller (the first buffer is reused) then larger again (a new
  // one), all sent at once so that reading one overlaps the compression of the last.
  const batches: Array<{ paths: Buffer[]; want: Buffer[] }> = [];
  for (const [count, size] of [[200, 4000], [50, 3000], [120, 7000], [30, 100], [240, 4096], [60, 2000]] as const) {
    const paths: Buffer[] = [];
    const want: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const b = content(seed++, size - (i % 7));
      const p = join(dir, `s${seed}`);
      await fs.writeFile(p, b);
      paths.push(Buffer.from(p));
      want.push(b);
    }
    batches.push({ paths, want });
  }
  const results = await Promise.all(batches.map(({ paths, want }) => pool.chunkBatch(paths, want.map((b) => b.length))));
  for (const [k, r] of results.entries()) {
    const { want } = batches[k]!;
    for (let i = 0; i < want.length; i++) {
      const s = SMALL_STATUS * i;
      assert.equal(r.status[s + SmallStatus.Ok], 1);
      const stored = r.data.subarray(r.status[s + SmallStatus.Offset]!, r.status[s + SmallStatus.Offset]! + r.status[s + SmallStatus.Length]!);
      const raw = (r.status[s + SmallStatus.Flags]! & BLOB_COMPRESSED) !== 0 ? await decompress(stored) : stored;
      assert.ok(Buffer.compare(raw, want[i]!) === 0, `batch ${k}: file ${i}`);
      assert.ok(r.ids.subarray(32 * i, 32 * i + 32).equals(idOf(want[i]!)), `batch ${k}: ID of file ${i}`);
    }
  }
  // Whole files, one after another on the same worker's read buffer.
  for (const size of [5 * 1024 * 1024 + 17, 300_000, 3 * 1024 * 1024]) {
    const b = content(seed++, size);
    const p = join(dir, `f${seed}`);
    await fs.writeFile(p, b);
    const parts: Buffer[] = [];
    const r = await pool.chunkFile(p, async (id, data) => {
      assert.ok(id.equals(idOf(data)), 'chunk ID is of the chunk');
      parts.push(Buffer.from(data));
    });
    assert.equal(r.size, size);
    assert.ok(Buffer.concat(parts).equals(b), `file of ${size} bytes`);
  }
});
