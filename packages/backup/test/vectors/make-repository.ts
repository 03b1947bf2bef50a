/**
 * Writes spec/vectors/backup/repositories/v2/ and v2.json: a whole small format-2
 * repository with its key (K1 = 00 01 … 1f) and what restoring its one snapshot must give.
 * Object IDs are random, so this is run once and the result committed; it is not part of
 * `npm run vectors`. Run as root (owners, setuid, a device-free but owner-rich tree):
 *
 *   node packages/backup/dist/test/vectors/make-repository.js
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackupKey } from '../../src/crypto/backup-key.js';
import { LocalBackend } from '../../src/storage/local.js';
import { Repository } from '../../src/repository/repository.js';
import { backup } from '../../src/repository/backup.js';
import { xattrs } from '../../src/repository/fs-meta.js';
import { patternBytes } from './generate.js';

const OUT = fileURLToPath(new URL('../../../../../spec/vectors/backup/repositories/', import.meta.url));
const K1 = Buffer.from(Array.from({ length: 32 }, (_, i) => i));

async function main(): Promise<void> {
  const work = await fs.mkdtemp(join(tmpdir(), 'coffer-v2-vector-'));
  const src = join(work, 'v2-tree');
  const at = (...p: Array<string | Buffer>) => Buffer.concat([Buffer.from(src), ...p.map((x) => Buffer.concat([Buffer.from('/'), typeof x === 'string' ? Buffer.from(x) : x]))]);
  await fs.mkdir(join(src, 'docs/old'), { recursive: true });
  await fs.writeFile(at('hello.txt'), 'hello, coffer\n');
  await fs.chmod(at('hello.txt'), 0o640);
  await fs.writeFile(at('notes.md'), '# notes\n'.repeat(2000)); // compresses
  await fs.writeFile(at('docs', 'random.bin'), patternBytes({ generator: 'sha256-counter', seed: 'v2-random', length: 40_000 }));
  await fs.writeFile(at(Buffer.from([0x63, 0x61, 0x66, 0xe9])), 'a Latin-1 name');
  await fs.writeFile(at('caf\uFFFD'), 'a name with U+FFFD');
  await fs.link(at('hello.txt'), at('docs', 'hello-again.txt'));
  await fs.symlink('../hello.txt', at('docs', 'link'));
  execFileSync('mkfifo', ['-m', '600', at('pipe').toString()]);
  const sp = await fs.open(at('sparse.img'), 'w');
  await sp.write(Buffer.alloc(4096, 9), 0, 4096, 512 * 1024);
  await sp.truncate(1024 * 1024);
  await sp.close();
  await fs.writeFile(at('setuid-tool'), '#!/bin/sh\n');
  await fs.chown(at('setuid-tool'), 1234, 5678);
  await fs.chmod(at('setuid-tool'), 0o4755);
  await xattrs()?.setAttribute(at('hello.txt').toString(), 'user.note', Buffer.from('kept in the tree listing'));
  const touch = (when: string, ...p: Array<string | Buffer>) => execFileSync('touch', ['-h', '-d', when, at(...p).toString()]);
  for (const p of ['hello.txt', 'notes.md', 'docs/random.bin', 'caf\uFFFD', 'sparse.img', 'setuid-tool', 'pipe', 'docs/link']) touch('@1700000000.123456789', ...p.split('/'));
  execFileSync('touch', ['-d', '@1700000000.5', Buffer.concat([Buffer.from(src + '/'), Buffer.from([0x63, 0x61, 0x66, 0xe9])]).toString('latin1')], { encoding: 'latin1' });
  touch('1959-06-01T00:00:00Z', 'docs', 'old');
  touch('@1700000001', 'docs');
  touch('@1700000002');

  const dir = join(OUT, 'v2');
  await fs.rm(dir, { recursive: true, force: true });
  const repo = await Repository.init(new LocalBackend(dir), BackupKey.fromBytes(K1), { chunker: { minSize: 1024, avgSize: 4096, maxSize: 16384 } });
  const r = await backup(repo, { paths: [src], now: () => new Date('2026-11-29T12:00:00Z') });
  if (r.warnings.length > 0) throw new Error(JSON.stringify(r.warnings));

  // What the restore must give, walked with bigint stats and byte names.
  const entries: Array<Record<string, unknown>> = [];
  const walk = async (abs: Buffer, rel: Buffer) => {
    const st = await fs.lstat(abs, { bigint: true });
    const e: Record<string, unknown> = { path: rel.toString('hex'), pathText: rel.toString('utf8'), mode: Number(st.mode & 0o7777n), mtimeNs: String(st.mtimeNs), uid: Number(st.uid), gid: Number(st.gid) };
    if (st.isSymbolicLink()) Object.assign(e, { type: 'symlink', target: (await fs.readlink(abs, { encoding: 'buffer' })).toString('hex') });
    else if (st.isFile()) {
      const data = await fs.readFile(abs);
      Object.assign(e, { type: 'file', size: data.length, sha256: createHash('sha256').update(data).digest('hex'), nlink: Number(st.nlink), sparse: st.blocks * 512n < st.size });
    } else if (st.isFIFO()) e.type = 'fifo';
    else e.type = 'dir';
    const xs = await (async () => {
      const api = xattrs();
      if (!api || st.isSymbolicLink() || st.isFIFO()) return [];
      const names = (await api.listAttributes(abs.toString())).sort();
      return Promise.all(names.map(async (n) => [n, (await api.getAttribute(abs.toString(), n))!.toString('hex')]));
    })();
    if (xs.length > 0) e.xattrs = xs;
    entries.push(e);
    if (st.isDirectory()) for (const n of (await fs.readdir(abs, { encoding: 'buffer' })).sort(Buffer.compare)) await walk(Buffer.concat([abs, Buffer.from('/'), n]), Buffer.concat([rel, Buffer.from('/'), n]));
  };
  await walk(Buffer.from(src), Buffer.from('v2-tree'));
  const vector = {
    name: 'repository-v2',
    kind: 'repository',
    description:
      'A whole format-2 repository (padding auto, zstd, chunker 1024/4096/16384) with its key. Open it with the key, restore its only snapshot as root, and compare with entries: path and symlink targets are hex bytes; mtimes within 1 µs (the sub-microsecond part is stored exactly in the tree listing); owners; link counts; sparse files need not be sparse where the file system has no holes.',
    key: K1.toString('hex'),
    directory: 'v2',
    expect: 'success',
    snapshot: r.id.toString('hex'),
    entries,
  };
  await fs.writeFile(join(OUT, 'v2.json'), JSON.stringify(vector, null, 2) + '\n');
  await fs.rm(work, { recursive: true, force: true });
  process.stdout.write(`wrote ${dir} (${entries.length} entries)\n`);
}

await main();
