#!/usr/bin/env node
/**
 * `npm run bench:shapes [-- --only NAME,NAME]`: Coffer against restic on shapes of data
 * beyond the chat set and the 50,000-file tree (issue 13, "speed on every shape of data"),
 * each built here deterministically: first backup, unchanged second backup, restore, in
 * one run on the same disk, `sync` before each step. Prints wall time and peak RSS per
 * step and `bench: shape-NAME-STEP ratio=X` (coffer / restic; below 1 is faster). No
 * targets: what each shape costs, next to restic.
 *
 *   sparse-image  a 2 GiB sparse file with four 32 MiB islands of random data (a VM disk)
 *   many-dirs     20,000 directories of one small file each
 *   links         5,000 files in 50 directories, each with two more hard links and a symlink
 *   deep          40 chains of 150 nested directories, a file at every level
 *   node-modules  this checkout's node_modules (as npm ci made it: not the same bytes on every machine)
 *
 * Restores go to the bench directory's disk. On this machine's ext4 (no journal) creating
 * files right after many were deleted is slow (bench-backup.mjs, trash): a run started
 * just after another (whose exit empties its trash) measured the deep shape's restore at
 * 6.9 s against 1.7–3.2 s otherwise; wait a few minutes between runs, or compare runs
 * whose restic figures agree.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, openSync, renameSync, rmSync, symlinkSync, writeFileSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argString } from './bench-args.mjs';
import { sh, timed } from './bench-timed.mjs';

const work = join(process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work'), 'shapes');
const coffer = join(root, 'packages', 'cli', 'dist', 'src', 'main.js');
const only = argString('only', undefined)?.split(',');
mkdirSync(work, { recursive: true });
const trashDir = join(work, 'trash');
let trashed = 0;
/** Nothing deleted while measuring (see bench-backup.mjs: creates after deletes are slow on this disk). */
const trash = (p) => {
  if (!existsSync(p)) return;
  mkdirSync(trashDir, { recursive: true });
  renameSync(p, join(trashDir, `${process.pid}-${trashed++}`));
};
rmSync(trashDir, { recursive: true, force: true });
process.on('exit', () => rmSync(trashDir, { recursive: true, force: true }));

const measure = (cmd, args, env = {}) => timed(work, cmd, args, env);

/** Deterministic bytes (xorshift): `n` of them from `seed`. */
function bytes(n, seed) {
  const out = Buffer.allocUnsafe(n);
  let x = seed | 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeInt32LE(x, Math.min(i, n - 4));
  }
  return out;
}

const shapes = {
  'sparse-image': (dir) => {
    mkdirSync(dir, { recursive: true });
    const fd = openSync(join(dir, 'disk.img'), 'w');
    const MiB = 1 << 20;
    for (const [k, at] of [0, 600, 1300, 2000].entries()) writeSync(fd, bytes(32 * MiB, 7 + k), 0, 32 * MiB, at * MiB);
    ftruncateSync(fd, 2048 * MiB);
    closeSync(fd);
  },
  'many-dirs': (dir) => {
    for (let i = 0; i < 20000; i++) {
      mkdirSync(join(dir, `d${i}`), { recursive: true });
      writeFileSync(join(dir, `d${i}`, 'f'), `file ${i}\n`);
    }
  },
  links: (dir) => {
    for (const d of ['a', 'b', 'c', 's']) for (let k = 0; k < 50; k++) mkdirSync(join(dir, d, String(k)), { recursive: true });
    for (let i = 0; i < 5000; i++) {
      const f = join(dir, 'a', String(i % 50), `f${i}`);
      writeFileSync(f, 'x'.repeat(i % 3000));
      linkSync(f, join(dir, 'b', String(i % 50), `h${i}`));
      linkSync(f, join(dir, 'c', String((i * 7) % 50), `g${i}`));
      symlinkSync(`../../a/${i % 50}/f${i}`, join(dir, 's', String(i % 50), `l${i}`));
    }
  },
  deep: (dir) => {
    for (let t = 0; t < 40; t++) {
      let p = join(dir, `t${t}`);
      for (let d = 0; d < 150; d++) {
        p = join(p, `level${d}`);
        mkdirSync(p, { recursive: true });
        writeFileSync(join(p, 'f'), String(d));
      }
    }
  },
  'node-modules': null, // this checkout's own
};

const keyFile = join(work, 'key');
writeFileSync(keyFile, '42'.repeat(32), { mode: 0o600 });
const cofferEnv = { COFFER_KEY: '', COFFER_REPOSITORY: '' };
const resticEnv = { RESTIC_PASSWORD: 'bench-password', RESTIC_CACHE_DIR: join(work, 'restic-cache') };
if (spawnSync('restic', ['version']).status !== 0) throw new Error('bench:shapes needs restic (apt-get install restic)');

const lines = [];
for (const [name, make] of Object.entries(shapes)) {
  if (only && !only.includes(name)) continue;
  let data = join(root, 'node_modules');
  if (make) {
    data = join(work, `data-${name}`);
    if (!existsSync(join(work, `.complete-${name}`))) {
      rmSync(data, { recursive: true, force: true });
      make(data);
      writeFileSync(join(work, `.complete-${name}`), '');
    }
  }
  const cr = join(work, 'coffer-repo');
  const rr = join(work, 'restic-repo');
  trash(cr);
  trash(rr);
  trash(resticEnv.RESTIC_CACHE_DIR);
  sh(process.execPath, [coffer, 'init', '-q', '--repo', cr, '--key-file', keyFile], { env: { ...process.env, ...cofferEnv } });
  sh('restic', ['init', '-q', '--repo', rr], { env: { ...process.env, ...resticEnv } });
  // A read of the data first, so neither tool's first backup pays for the cold page cache.
  sh('tar', ['-cf', '/dev/null', data]);
  const c = {};
  const r = {};
  const cb = ['backup', '-q', '--repo', cr, '--key-file', keyFile, data];
  const rb = ['--repo', rr, 'backup', '-q', data];
  c.backup1 = measure(process.execPath, [coffer, ...cb], cofferEnv);
  r.backup1 = measure('restic', rb, resticEnv);
  c.backup2 = measure(process.execPath, [coffer, ...cb], cofferEnv);
  r.backup2 = measure('restic', rb, resticEnv);
  const co = join(work, 'restore-coffer');
  const ro = join(work, 'restore-restic');
  trash(co);
  trash(ro);
  c.restore = measure(process.execPath, [coffer, 'restore', '-q', 'latest', '--target', co, '--repo', cr, '--key-file', keyFile], cofferEnv);
  r.restore = measure('restic', ['--repo', rr, 'restore', '-q', 'latest', '--target', ro], resticEnv);
  trash(co);
  trash(ro);
  console.log(`shape ${name}: ${data}`);
  for (const step of ['backup1', 'backup2', 'restore']) {
    console.log(`  ${step.padEnd(8)} coffer ${c[step].wall.toFixed(2)} s ${(c[step].rss / 1024).toFixed(0)} MiB   restic ${r[step].wall.toFixed(2)} s ${(r[step].rss / 1024).toFixed(0)} MiB`);
    lines.push(`bench: shape-${name}-${step} ratio=${(c[step].wall / r[step].wall).toFixed(2)} rss=${(c[step].rss / r[step].rss).toFixed(2)}`);
  }
}
for (const l of lines) console.log(l);
