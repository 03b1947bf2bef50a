/**
 * Issue 13: a batch of small files' stored bytes come from a worker in one buffer, which
 * goes back to that worker once its blobs are in packs and carries a later batch. A
 * buffer given back while the main thread still used it would lose or mix up file
 * contents: here every returned buffer is poisoned by the worker at once, batches are
 * many more than those in flight (so buffers are given back and reused), and each
 * snapshot must restore byte for byte, on the paths that store from a batch later than
 * usual (padding max places blobs asynchronously; the afterFileRead hook stores each
 * file after an await).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { backup, restore } from '../src/index.js';
import { batchBuffersForTesting } from '../src/chunker/chunk-pool.js';
import { DEFAULT_CHUNKER } from '../src/chunker/fastcdc.js';
import { PadMode } from '../src/repository/padding.js';
import { newRepo, prng, tempDir } from './fixtures/trees.js';

/** 3,000 files of 0–8 KiB, half compressible: some 12 MiB, a dozen batches and more. */
async function smallFiles(root: string): Promise<Map<string, Buffer>> {
  const want = new Map<string, Buffer>();
  for (let d = 0; d < 6; d++) {
    const sub = join(root, `d${d}`);
    await fs.mkdir(sub, { recursive: true });
    for (let i = 0; i < 500; i++) {
      const size = (i * 1613 + d * 7) % 8192;
      const b = i % 2 ? Buffer.alloc(size, `text ${d}/${i} `) : prng(d * 1000 + i, size);
      await fs.writeFile(join(sub, `f${i}`), b);
      want.set(join(`d${d}`, `f${i}`), b);
    }
  }
  return want;
}

async function roundTrip(t: test.TestContext, label: string, opts: { padding?: PadMode; hook?: boolean }): Promise<void> {
  const tr = await newRepo(t, DEFAULT_CHUNKER);
  const src = join(await tempDir(t, 'src'), 'small');
  const want = await smallFiles(src);
  const before = batchBuffersForTesting.returned;
  let hooked = 0;
  const r = await backup(tr.repo, {
    paths: [src],
    ...(opts.padding !== undefined ? { padding: opts.padding } : {}),
    ...(opts.hook
      ? {
          afterFileRead: async () => {
            hooked++;
            await new Promise((res) => setImmediate(res));
          },
        }
      : {}),
  });
  assert.deepEqual(r.warnings, [], label);
  assert.equal(r.read.files, want.size, label);
  if (opts.hook) assert.ok(hooked >= want.size - 10, `${label}: hook ran ${hooked} times`);
  // Many more batches than are ever in flight: buffers went back and were used again.
  assert.ok(batchBuffersForTesting.returned - before >= 10, `${label}: ${batchBuffersForTesting.returned - before} batch buffers given back`);
  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, rec!, { target });
  for (const [rel, b] of want) assert.ok(Buffer.compare(await fs.readFile(join(target, 'small', rel)), b) === 0, `${label}: ${rel}`);
}

test('batch buffers given back to the workers (and poisoned there) never change what is stored', async (t) => {
  batchBuffersForTesting.poison = true;
  t.after(() => (batchBuffersForTesting.poison = false));
  await roundTrip(t, 'default padding', {});
  await roundTrip(t, 'padding max', { padding: PadMode.Max });
  await roundTrip(t, 'afterFileRead hook', { hook: true });
});
