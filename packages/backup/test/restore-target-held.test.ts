// RestoreTarget holds at most MAX_HELD_DIRS distinct directories at once: a wide tree
// (20,000 directories of one file each) restored with every small file in flight holding
// its own directory ran out of descriptors under `ulimit -n 1024` before.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { MAX_HELD_DIRS, openDirsFor, RestoreTarget, softDescriptorLimit } from '../src/repository/restore-target.js';

const openFds = () => readdirSync('/proc/self/fd').length;

test('at most MAX_HELD_DIRS directories are held at once; the others wait, then all are made', { skip: process.platform !== 'linux' && 'counts /proc/self/fd' }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'coffer-held-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const tgt = await RestoreTarget.open(root);
  const n = MAX_HELD_DIRS * 3;
  const before = openFds();
  let inside = 0;
  let peak = 0;
  let peakFds = 0;
  let go!: () => void;
  const gate = new Promise<void>((r) => (go = r));
  const all = Array.from({ length: n }, (_, i) =>
    tgt.withDir(Buffer.from(`d${i}`), true, async () => {
      inside++;
      peak = Math.max(peak, inside);
      peakFds = Math.max(peakFds, openFds());
      await gate;
      inside--;
      return i;
    }),
  );
  // Let every caller that can get in do so, then let them all go. Polled up to a deadline,
  // not 50 x 5 ms: getting in means making and opening a directory (thread-pool I/O), which
  // a loaded machine can take more than 250 ms to do MAX_HELD_DIRS times. One past the
  // bound is still caught: by the equality below, or by `peak` once all have run.
  for (const end = Date.now() + 30_000; inside < MAX_HELD_DIRS && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
  assert.equal(inside, MAX_HELD_DIRS, 'as many as the bound, no more');
  go();
  assert.deepEqual(await Promise.all(all), Array.from({ length: n }, (_, i) => i));
  assert.equal(peak, MAX_HELD_DIRS);
  // Held ones, idle ones kept for reuse, the target itself.
  assert.ok(peakFds - before <= MAX_HELD_DIRS + openDirsFor(softDescriptorLimit()) + 2, `descriptors: ${peakFds - before} more than before`);
  // A directory already held is given to another caller at once, even at the bound.
  const held = tgt.holdOpen(Buffer.from('d0')) ?? (await tgt.opened(Buffer.from('d0')), tgt.holdOpen(Buffer.from('d0')));
  assert.ok(held);
  tgt.release(held);
  await tgt.close();
  assert.equal(readdirSync(root).length, n);
});
