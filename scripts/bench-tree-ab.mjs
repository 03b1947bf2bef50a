// Interleaved A/B of two Coffer builds on the many-small-files tree or the chat set (issue 13):
//   node scripts/bench-tree-ab.mjs OLD_ROOT NEW_ROOT [--pairs 5] [--set tree|chat] [--files 50000] [--scale 1]
//        [--only backup1|backup2|restore] [--target-dir DIR] [--rt]
// OLD_ROOT and NEW_ROOT are built checkouts (each with packages/cli/dist/src/main.js).
// --set tree: make-tree's 50,000 files (--files); chat: make-dataset's 1 GiB set (--scale).
// backup1: each pair backs the step-0 data up into a fresh repository with each build, in
// alternating order. backup2: the data gets a day of changes (STEP 1) once, then each pair
// runs each build's second backup on a fresh copy of that build's first-backup repository.
// restore: each pair restores each build's first backup into a fresh directory under
// --target-dir (default: the bench directory; a journaled file system spares this disk's
// slow creates after deletes), removed after each restore.
// --rt runs the builds under chrt -f 50, so other processes on the machine count less. On a
// quiet machine only: with another real-time benchmark at once, one build's run once spun a
// whole core for 14 minutes (session 12).
// Prints every pair's wall seconds, CPU and peak RSS, and the median ratios NEW/OLD.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argString, positionalArgs } from './bench-args.mjs';

const [oldRoot, newRoot] = positionalArgs().map((p) => resolve(p));
if (!oldRoot || !newRoot) throw new Error('usage: bench-tree-ab.mjs OLD_ROOT NEW_ROOT [--pairs N] [--set tree|chat] [--files N] [--scale S] [--only backup1|backup2|restore] [--target-dir DIR] [--rt]');
const pairs = Number(argString('pairs', '5'));
const files = Number(argString('files', '50000'));
const scale = argString('scale', '1');
const set = argString('set', 'tree');
if (set !== 'tree' && set !== 'chat') throw new Error('--set: tree or chat');
const only = argString('only', undefined);
const realtime = process.argv.includes('--rt');
const work = process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work');
const makeTree = process.env.COFFER_MAKE_TREE ?? join(root, '..', 'shared', 'bench', 'make-tree');
const makeDataset = process.env.COFFER_MAKE_DATASET ?? join(root, '..', 'shared', 'bench', 'make-dataset');
const targetDir = argString('target-dir', work);

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.slice(-2000)}`);
  return r.stdout;
}
function measure(cmd, args) {
  const t = join(work, '.time-ab');
  const timed = ['/usr/bin/time', '-f', '%e %U %S %M', '-o', t, cmd, ...args];
  const [c, ...a] = realtime ? ['chrt', '-f', '50', ...timed] : timed;
  sh(c, a, { env: { ...process.env, COFFER_KEY: '', COFFER_REPOSITORY: '' } });
  const [wall, user, sys, rss] = readFileSync(t, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, user, sys, rss };
}
mkdirSync(work, { recursive: true });
const keyFile = join(work, 'key');
writeFileSync(keyFile, '42'.repeat(32), { mode: 0o600 });
const pristine = join(work, set === 'tree' ? `tree0-${files}` : `data0-scale${scale}`);
// The same layouts as bench-backup.mjs's, so either script's copy serves both.
const pristineData = set === 'tree' ? join(pristine, 'tree') : pristine;
if (!existsSync(join(pristine, '.complete'))) {
  rmSync(pristine, { recursive: true, force: true });
  if (set === 'tree') sh(makeTree, [pristineData, String(files)]);
  else sh(makeDataset, [pristineData, scale, '0']);
  writeFileSync(join(pristine, '.complete'), '');
}
const tree = join(work, set === 'tree' ? 'tree' : 'data');
rmSync(tree, { recursive: true, force: true });
sh('cp', ['-a', pristineData, tree]);
rmSync(join(tree, '.complete'), { force: true });
sh('sync', []);

const builds = { old: oldRoot, new: newRoot };
const cli = (b) => join(builds[b], 'packages', 'cli', 'dist', 'src', 'main.js');
const repoOf = (b, suffix = '') => join(work, `ab-repo-${b}${suffix}`);
const init = (b, repo) => {
  rmSync(repo, { recursive: true, force: true });
  sh(process.execPath, [cli(b), 'init', '--repo', repo, '--key-file', keyFile, '-q']);
};
const backup = (b, repo) => measure(process.execPath, [cli(b), 'backup', '-q', '--repo', repo, '--key-file', keyFile, tree]);
const restoreOnce = (b) => {
  const target = join(targetDir, `ab-restore-${b}`);
  rmSync(target, { recursive: true, force: true });
  sh('sync', []);
  const m = measure(process.execPath, [cli(b), 'restore', '-q', 'latest', '--target', target, '--repo', repoOf(b), '--key-file', keyFile]);
  rmSync(target, { recursive: true, force: true });
  return m;
};
const fmt = (m) => `${m.wall.toFixed(2)} s (user ${m.user.toFixed(2)} sys ${m.sys.toFixed(2)}, ${(m.rss / 1024).toFixed(0)} MiB)`;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
function run(step, n, once) {
  const ratios = [];
  const cpu = [];
  const rss = [];
  for (let i = 0; i < n; i++) {
    const order = i % 2 === 0 ? ['old', 'new'] : ['new', 'old'];
    const got = {};
    for (const b of order) got[b] = once(b);
    const r = got.new.wall / got.old.wall;
    ratios.push(r);
    cpu.push((got.new.user + got.new.sys) / (got.old.user + got.old.sys));
    rss.push(got.new.rss / got.old.rss);
    console.log(`${step} pair ${i + 1} (${order.join(' first, ')} second): old ${fmt(got.old)}  new ${fmt(got.new)}  new/old ${r.toFixed(3)}`);
  }
  console.log(`${step}: median new/old ${median(ratios).toFixed(3)} over ${n} pairs (CPU ${median(cpu).toFixed(3)}, peak RSS ${median(rss).toFixed(3)})`);
}
// First backups: the last one of each build is kept as the parent of the second backups.
// Each timed run starts after a sync: the previous run's written (or deleted) repository
// would otherwise be written back during the next one, which made the second of a pair
// slower (base against itself: backup1 1.173 over 5 pairs, session 14).
run('backup1', only === 'backup2' || only === 'restore' ? 1 : pairs, (b) => {
  init(b, repoOf(b));
  sh('sync', []);
  return backup(b, repoOf(b));
});
if (only === undefined || only === 'restore') run('restore', pairs, restoreOnce);
if (only === undefined || only === 'backup2') {
  if (set === 'tree') sh(makeTree, [tree, String(files), '1']);
  else sh(makeDataset, [tree, scale, '1']);
  sh('sync', []);
  run('backup2', pairs, (b) => {
    const copy = repoOf(b, '-2');
    rmSync(copy, { recursive: true, force: true });
    sh('cp', ['-a', repoOf(b), copy]);
    sh('sync', []);
    return backup(b, copy);
  });
}
for (const b of Object.keys(builds)) for (const s of ['', '-2']) rmSync(repoOf(b, s), { recursive: true, force: true });
rmSync(tree, { recursive: true, force: true });
