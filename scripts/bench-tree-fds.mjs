#!/usr/bin/env node
/**
 * The ordinary-tree check of issue 10 at full size (too slow for `npm test`, which runs
 * the same path on 3,000 files: packages/cli/test/safety.test.ts): makes a tree of N
 * small files with ../shared/bench/make-tree (default 50,000), then runs backup,
 * restore, check --read-data and prune under `ulimit -n 256`, compares the restored
 * tree, and prints each step's time.
 *
 *   npm run bench:tree-fds [-- FILES [NOFILE]]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const files = Number(process.argv[2] ?? 50_000);
const nofile = Number(process.argv[3] ?? 256);
const makeTree = process.env.COFFER_MAKE_TREE ?? resolve(root, '..', 'shared', 'bench', 'make-tree');
const bin = join(root, 'packages', 'cli', 'dist', 'src', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'coffer-tree-fds-'));
try {
  const src = join(dir, 'tree');
  let t = Date.now();
  execFileSync(makeTree, [src, String(files)], { stdio: ['ignore', 'ignore', 'inherit'] });
  console.log(`make-tree ${files} files: ${((Date.now() - t) / 1000).toFixed(1)} s`);
  const key = execFileSync(process.execPath, [bin, 'key', 'generate', '-q']).toString().trim();
  const env = { ...process.env, COFFER_REPOSITORY: join(dir, 'repo'), COFFER_KEY: key, XDG_CONFIG_HOME: join(dir, 'config') };
  const run = (label, args) => {
    t = Date.now();
    const r = spawnSync('bash', ['-c', `ulimit -n ${nofile} && exec "$0" "$@"`, process.execPath, bin, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const secs = ((Date.now() - t) / 1000).toFixed(1);
    console.log(`${label.padEnd(22)} exit ${r.status}  ${secs} s`);
    if (r.status !== 0) {
      process.stderr.write(r.stderr);
      process.exit(1);
    }
  };
  run('init', ['init', '-q']);
  run(`backup (nofile ${nofile})`, ['backup', '-q', src]);
  run(`restore (nofile ${nofile})`, ['restore', 'latest', '-q', '--target', join(dir, 'out')]);
  run(`check --read-data`, ['check', '-q', '--read-data']);
  run(`prune`, ['prune', '-q']);
  const diff = spawnSync('diff', ['-r', '--no-dereference', src, join(dir, 'out', 'tree')]);
  console.log(diff.status === 0 ? 'restored tree is identical' : `restored tree differs:\n${diff.stdout}`);
  writeFileSync(join(dir, 'done'), '');
  if (diff.status !== 0) process.exit(1);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
