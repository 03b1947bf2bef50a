/**
 * A source file replaced between the walk's stat and its read, by something that is not
 * a regular file: a FIFO would block the read's open until some writer came (the backup
 * hung, its lock held, in an attack with a FIFO swapped in and out of a directory the
 * backup reads); a directory or device node is no file's contents either. The backup goes
 * on: a warning names the path, the rest is stored, nothing hangs.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BackupKey, RepositoryKeys, backup, restore } from '../src/index.js';
import { ChunkPool, FileReadError } from '../src/chunker/chunk-pool.js';
import { DEFAULT_CHUNKER } from '../src/chunker/fastcdc.js';
import { newRepo, prng, tempDir } from './fixtures/trees.js';

const mkfifo = (p: string) => execFileSync('mkfifo', [p]);

for (const size of [3000, 2_000_000]) {
  for (const into of ['fifo', 'dir'] as const) {
    test(`a ${size < 100_000 ? 'small' : 'large'} file replaced by a ${into === 'fifo' ? 'FIFO' : 'directory'} after the walk saw it: a warning, the backup completes (no hang), the other files are stored`, { timeout: 60_000 }, async (t) => {
      const tr = await newRepo(t);
      const src = join(await tempDir(t, 'src'), 'data');
      await fs.mkdir(src);
      await fs.writeFile(join(src, 'a-victim'), prng(1, size));
      await fs.writeFile(join(src, 'b-kept'), prng(2, size));
      // The walk asks the exclusion with the entry's stat (a regular file), then reads it:
      // the swap goes in between.
      const exclude = async (abs: Buffer) => {
        const p = abs.toString('latin1');
        if (p.endsWith('/a-victim')) {
          await fs.rm(p);
          if (into === 'fifo') mkfifo(p);
          else await fs.mkdir(p);
        }
        return false;
      };
      const r = await backup(tr.repo, { paths: [src], exclude });
      assert.ok(r.warnings.some((w) => w.path.endsWith('a-victim')), JSON.stringify(r.warnings));
      const out = await tempDir(t, 'out');
      await restore(await tr.reopen(), { id: r.id, snapshot: r.snapshot }, { target: out });
      assert.deepEqual(await fs.readFile(join(out, 'data', 'b-kept')), prng(2, size));
    });
  }
}

test('the chunk workers refuse a FIFO or a directory at once (no blocking open, no endless read)', { timeout: 60_000 }, async (t) => {
  const dir = await tempDir(t, 'special');
  const fifo = join(dir, 'fifo');
  mkfifo(fifo);
  const keys = new RepositoryKeys(BackupKey.generate(), Buffer.alloc(16, 1));
  const pool = new ChunkPool(ChunkPool.setupFor(keys.gearTable, keys.chunkIdSpec, DEFAULT_CHUNKER), 1);
  t.after(() => pool.close());
  for (const p of [fifo, dir]) {
    await assert.rejects(pool.chunkFile(p, async () => {}), (e: unknown) => e instanceof FileReadError && /not a regular file/.test(e.message), p);
  }
});
