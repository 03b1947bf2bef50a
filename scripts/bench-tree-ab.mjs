// Interleaved A/B of two Coffer builds on the many-small-files tree (issue 13):
//   node scripts/bench-tree-ab.mjs OLD_ROOT NEW_ROOT [--pairs 5] [--files 50000] [--only backup1|backup2]
// OLD_ROOT and NEW_ROOT are built checkouts (each with packages/cli/dist/src/main.js).
// backup1: each pair backs the step-0 tree up into a fresh repository with each build, in
// alternating order. backup2: the tree gets make-tree's day of changes (STEP 1) once, then
// each pair runs each build's second backup on a fresh copy of that build's first-backup
// repository. Prints every pair's wall seconds and the median ratio NEW/OLD.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argString, positionalArgs } from './bench-args.mjs';

const [oldRoot, newRoot] = positionalArgs().map((p) => resolve(p));
if (!oldRoot || !newRoot) throw new Error('usage: bench-tree-ab.mjs OLD_ROOT NEW_ROOT [--pairs N] [--files N] [--only backup1|backup2]');
const pairs = Number(argString('pairs', '5'));
const files = Number(argString('files', '50000'));
const only = argString('only', undefined);
const work = process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work');
const makeTree = process.env.COFFER_MAKE_TREE ?? join(root, '..', 'shared', 'bench', 'make-tree');

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.slice(-2000)}`);
  return r.stdout;
}
function measure(cmd, args) {
  const t = join(work, '.time-ab');
  sh('/usr/bin/time', ['-f', '%e %U %S %M', '-o', t, cmd, ...args], { env: { ...process.env, COFFER_KEY: '', COFFER_REPOSITORY: '' } });
  const [wall, user, sys, rss] = readFileSync(t, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, user, sys, rss };
}
mkdirSync(work, { recursive: true });
const keyFile = join(work, 'key');
writeFileSync(keyFile, '42'.repeat(32), { mode: 0o600 });
const pristine = join(work, `tree0-${files}`);
if (!existsSync(join(pristine, '.complete'))) {
  rmSync(pristine, { recursive: true, force: true });
  sh(makeTree, [join(pristine, 'tree'), String(files)]);
  writeFileSync(join(pristine, '.complete'), '');
}
const tree = join(work, 'tree');
rmSync(tree, { recursive: true, force: true });
sh('cp', ['-a', join(pristine, 'tree'), tree]);
sh('sync', []);

const builds = { old: oldRoot, new: newRoot };
const cli = (b) => join(builds[b], 'packages', 'cli', 'dist', 'src', 'main.js');
const repoOf = (b, suffix = '') => join(work, `ab-repo-${b}${suffix}`);
const init = (b, repo) => {
  rmSync(repo, { recursive: true, force: true });
  sh(process.execPath, [cli(b), 'init', '--repo', repo, '--key-file', keyFile, '-q']);
};
const backup = (b, repo) => measure(process.execPath, [cli(b), 'backup', '-q', '--repo', repo, '--key-file', keyFile, tree]);
const fmt = (m) => `${m.wall.toFixed(2)} s (user ${m.user.toFixed(2)} sys ${m.sys.toFixed(2)}, ${(m.rss / 1024).toFixed(0)} MiB)`;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
function run(step, n, once) {
  const ratios = [];
  for (let i = 0; i < n; i++) {
    const order = i % 2 === 0 ? ['old', 'new'] : ['new', 'old'];
    const got = {};
    for (const b of order) got[b] = once(b);
    const r = got.new.wall / got.old.wall;
    ratios.push(r);
    console.log(`${step} pair ${i + 1} (${order.join(' first, ')} second): old ${fmt(got.old)}  new ${fmt(got.new)}  new/old ${r.toFixed(3)}`);
  }
  console.log(`${step}: median new/old ${median(ratios).toFixed(3)} over ${n} pairs`);
}
// First backups: the last one of each build is kept as the parent of the second backups.
run('backup1', only === 'backup2' ? 1 : pairs, (b) => {
  init(b, repoOf(b));
  return backup(b, repoOf(b));
});
if (only !== 'backup1') {
  sh(makeTree, [tree, String(files), '1']);
  sh('sync', []);
  run('backup2', pairs, (b) => {
    const copy = repoOf(b, '-2');
    rmSync(copy, { recursive: true, force: true });
    sh('cp', ['-a', repoOf(b), copy]);
    return backup(b, copy);
  });
}
for (const b of Object.keys(builds)) for (const s of ['', '-2']) rmSync(repoOf(b, s), { recursive: true, force: true });
rmSync(tree, { recursive: true, force: true });
