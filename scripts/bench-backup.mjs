/* global fetch */
// `npm run bench:backup [-- --scale N] [-- --rss-scale N] [-- --pad off|auto|max]`
// `npm run bench:backup -- --tree [--tree-files N] [--tree-growth M]` (the many-small-files tree only)
// `npm run bench:backup -- --all` (both)
// `--restore-runs N` (default 3): each tool's restores timed N times, alternating, medians;
// `--backup-runs N` (default 3): each tool's first and second backups likewise, each run in its own repository;
// `--blob-runs N` (default 3): pairs of first backups to the relay's blob API and to a directory
// `npm run bench:backup -- --costs` (what each stage of a backup costs per GiB on the chat set's bytes)
// Coffer against restic on the standard chat-app data set (../shared/bench/make-dataset),
// in one run on the same data: first backup, backup after a day of changes, full restore.
// Prints wall time, peak RSS and repository size per step, the ratio Coffer/restic, and
// ends with `bench: NAME ratio=X target=Y` lines. Also: a first backup through the front
// end's blob API over loopback against the same backup to a local directory
// (blob-backup: throughput ratio). With --rss-scale N it also runs Coffer's first backup
// and restore at scale N to show that peak memory stays flat.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argString } from './bench-args.mjs';
import { sh, timed } from './bench-timed.mjs';

const scale = argString('scale', '1');
const rssScale = argString('rss-scale', undefined);
// The repository's size padding (spec §7.3); the size ratio depends on it.
const pad = argString('pad', 'auto');
const work = process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work');
const makeDataset = join(root, '..', 'shared', 'bench', 'make-dataset');
const makeTree = process.env.COFFER_MAKE_TREE ?? join(root, '..', 'shared', 'bench', 'make-tree');
const treeMode = process.argv.includes('--tree') || process.argv.includes('--all');
const chatMode = !process.argv.includes('--tree') || process.argv.includes('--all');
const treeFiles = Number(argString('tree-files', '50000'));
// Restores are timed this many times for each tool, alternating which goes first, and the
// median counts (both tools' restores varied by up to 2x from run to run on this disk).
const restoreRuns = Math.max(1, Number(argString('restore-runs', '3')));
// First and second backups likewise (`--backup-runs N`): run i of each tool backs up into
// its own repository i (made for its first backup, given the second), alternating which tool
// goes first. One run of each, Coffer always first, was the rule before; in an A/B of the
// tree's second backup on a loaded machine (session 24), the build that ran second of a
// pair was 9–18% faster in 4 of 4 pairs.
const backupRuns = Math.max(1, Number(argString('backup-runs', '3')));
// The blob-API backup against a local one: this many pairs (`--blob-runs N`), median ratio.
const blobRuns = Math.max(1, Number(argString('blob-runs', '3')));
const treeGrowth = process.argv.includes('--tree-growth') ? Number(argString('tree-growth', '200000')) || 200000 : undefined;
const coffer = join(root, 'packages', 'cli', 'dist', 'src', 'main.js');

function duBytes(p) {
  return Number(sh('du', ['-sb', p]).split('\t')[0]);
}
/** A timed step (bench-timed.mjs): after a `sync`, wall seconds and peak RSS. */
function measure(cmd, args, env = {}) {
  return timed(work, cmd, args, env);
}
/**
 * The restores of both tools, `restoreRuns` times each, alternating which goes first; each
 * run into a fresh directory (checked by `verify` for Coffer's first run), trashed after.
 * Returns the median wall time and the highest peak RSS of each tool, with every wall time.
 */
function restores(cofferArgs, resticArgs, outBase, verify) {
  const runs = { coffer: [], restic: [] };
  for (let i = 0; i < restoreRuns; i++) {
    for (const tool of i % 2 === 0 ? ['coffer', 'restic'] : ['restic', 'coffer']) {
      if (tool === 'restic' && !haveRestic) continue;
      const out = `${outBase}-${tool}`;
      trash(out);
      runs[tool].push(tool === 'coffer' ? measure(process.execPath, [coffer, ...cofferArgs(out)], cofferEnv) : measure('restic', resticArgs(out), resticEnv));
      if (tool === 'coffer' && runs.coffer.length === 1) verify(out);
      trash(out);
    }
  }
  const summary = (ms) => {
    const walls = ms.map((m) => m.wall).sort((a, b) => a - b);
    return { wall: walls[(walls.length - 1) >> 1], rss: Math.max(...ms.map((m) => m.rss)), walls: ms.map((m) => m.wall) };
  };
  return { coffer: summary(runs.coffer), ...(runs.restic.length ? { restic: summary(runs.restic) } : {}) };
}
/**
 * One backup step of both tools, `backupRuns` times each, alternating which goes first:
 * run i of a tool backs up into `repos[tool][i]` (made by `init(tool, repo)` first when
 * `init` is given). Returns, per tool, the median wall time, the highest peak RSS, the
 * size of repository 0 after the step, and every wall time.
 */
function backupSteps(repos, args, init) {
  const runs = { coffer: [], restic: [] };
  for (let i = 0; i < backupRuns; i++) {
    for (const tool of i % 2 === 0 ? ['coffer', 'restic'] : ['restic', 'coffer']) {
      if (tool === 'restic' && !haveRestic) continue;
      const repo = repos[tool][i];
      init?.(tool, repo);
      runs[tool].push(tool === 'coffer' ? measure(process.execPath, [coffer, ...args.coffer(repo)], cofferEnv) : measure('restic', args.restic(repo), resticEnv));
    }
  }
  const summary = (ms, repo) => {
    const walls = ms.map((m) => m.wall).sort((a, b) => a - b);
    return { wall: walls[(walls.length - 1) >> 1], rss: Math.max(...ms.map((m) => m.rss)), size: duBytes(repo), walls: ms.map((m) => m.wall) };
  };
  return { coffer: summary(runs.coffer, repos.coffer[0]), ...(runs.restic.length ? { restic: summary(runs.restic, repos.restic[0]) } : {}) };
}
/** Repositories `base`-coffer-i and `base`-restic-i for backupSteps. */
function benchRepos(base) {
  const list = (tool) => Array.from({ length: backupRuns }, (_, i) => (i === 0 ? `${base}-${tool}` : `${base}-${tool}-${i}`));
  return { coffer: list('coffer'), restic: list('restic') };
}
/** Makes `repo` anew for a first backup of `tool`. */
function initRepo(tool, repo) {
  trash(repo);
  if (tool === 'coffer') sh(process.execPath, [coffer, 'init', '--repo', repo, '--key-file', keyFile, '--pad', pad, '-q']);
  else sh('restic', ['init', '-q', '--repo', repo], { env: { ...process.env, ...resticEnv } });
}
const walls = (m) => m.walls.map((w) => w.toFixed(2)).join(' ');

function pristineSet(s) {
  const pristine = join(work, `data0-scale${s}`);
  if (!existsSync(join(pristine, '.complete'))) {
    rmSync(pristine, { recursive: true, force: true });
    process.stderr.write(`building the scale-${s} data set in ${pristine} (once)…\n`);
    sh(makeDataset, [pristine, s, '0']);
    writeFileSync(join(pristine, '.complete'), '');
  }
  return pristine;
}
function dataset(dir, s) {
  const pristine = pristineSet(s);
  trash(dir);
  sh('cp', ['-a', pristine, dir]);
  rmSync(join(dir, '.complete'));
}

mkdirSync(work, { recursive: true });
/**
 * Nothing is deleted while the bench runs: directories go to a trash directory, emptied
 * when the bench ends. On ext4 without a journal (this machine's disk) creating a file
 * skips every inode freed in the last 1–6 minutes, reading each one's table block: a
 * restore right after deleting 50,000 files spent half its time there, so every
 * restore's figure depended on what had been deleted just before it (and restic's, which
 * ran after Coffer's output was deleted, most).
 */
const trashDir = join(work, 'trash');
let trashed = 0;
function trash(p) {
  if (!existsSync(p)) return;
  mkdirSync(trashDir, { recursive: true });
  renameSync(p, join(trashDir, `${process.pid}-${trashed++}`));
}
function emptyTrash() {
  rmSync(trashDir, { recursive: true, force: true });
}
emptyTrash(); // a run that stopped early left it
process.on('exit', emptyTrash);
const keyFile = join(work, 'key');
writeFileSync(keyFile, '42'.repeat(32), { mode: 0o600 });
const cofferEnv = { COFFER_KEY: '', COFFER_REPOSITORY: '' };
const rows = {};

function runCoffer(data, repo, restoreDir, withChanges) {
  trash(repo);
  sh(process.execPath, [coffer, 'init', '--repo', repo, '--key-file', keyFile, '-q']);
  const out = {};
  out.backup1 = measure(process.execPath, [coffer, 'backup', '-q', '--repo', repo, '--key-file', keyFile, data], cofferEnv);
  out.backup1.size = duBytes(repo);
  if (withChanges) {
    sh(makeDataset, [data, scale, '1']);
    out.backup2 = measure(process.execPath, [coffer, 'backup', '-q', '--repo', repo, '--key-file', keyFile, data], cofferEnv);
    out.backup2.size = duBytes(repo);
  }
  trash(restoreDir);
  out.restore = measure(process.execPath, [coffer, 'restore', '-q', 'latest', '--target', restoreDir, '--repo', repo, '--key-file', keyFile], cofferEnv);
  sh('diff', ['-r', data, join(restoreDir, basename(data))]);
  return out;
}

/**
 * How much a first touch of new memory costs on this machine now: a child process fills
 * 256 MiB it has just allocated; milliseconds per GiB. On this benchmark's machine (a
 * nested VM) every page's first touch traps to the hypervisor, and the cost moved from
 * 0.44 to 3.5 s per GiB from one minute to the next (session 20): every step that writes
 * a GiB into the page cache (a first backup, a restore, `cp -r`) pays it, both tools
 * alike, so it is printed beside the floor to read a run's figures by.
 */
function touchProbe() {
  const out = sh(process.execPath, ['-e', 'const t = process.hrtime.bigint(); Buffer.allocUnsafeSlow(256 << 20).fill(1); console.log(Number(process.hrtime.bigint() - t) / 1e6)']);
  return Math.round(Number(out.trim()) * 4);
}

/** `cp -r` of `src` to a fresh directory on the same disk: the machine's floor for reading and writing it. */
function copyFloor(src) {
  const dst = join(work, 'floor-copy');
  trash(dst);
  sh('sync', []);
  const m = measure('cp', ['-r', src, dst]);
  trash(dst);
  return m;
}

if (process.argv.includes('--costs')) {
  await costs();
  process.exit(0);
}
const haveRestic = spawnSync('restic', ['version']).status === 0;
const resticEnv = { RESTIC_PASSWORD: 'bench-password', RESTIC_CACHE_DIR: join(work, 'restic-cache') };
if (treeMode && !haveRestic) throw new Error('--tree needs restic (apt-get install restic)');
if (treeMode) await treeBench();
if (!chatMode) process.exit(0);

const data = join(work, 'data');
dataset(data, scale);
sh('sync', []);
const touchBefore = touchProbe();
const floor = copyFloor(data);

// First backups, then a day of changes, then second backups, then restores: both tools
// see exactly the same bytes at each step.
const setRepos = benchRepos(join(work, 'set-repo'));
const cofferRepo = setRepos.coffer[0];
const setArgs = { coffer: (repo) => ['backup', '-q', '--repo', repo, '--key-file', keyFile, data], restic: (repo) => ['--repo', repo, 'backup', '-q', data] };
trash(resticEnv.RESTIC_CACHE_DIR);
{
  const b1 = backupSteps(setRepos, setArgs, initRepo);
  sh(makeDataset, [data, scale, '1']);
  sh('sync', []);
  const b2 = backupSteps(setRepos, setArgs);
  rows.coffer = { backup1: b1.coffer, backup2: b2.coffer };
  if (b1.restic) rows.restic = { backup1: b1.restic, backup2: b2.restic };
  if (backupRuns > 1) console.log(`backup wall times (s), ${backupRuns} runs each, alternating: first coffer ${walls(b1.coffer)}${b1.restic ? `; restic ${walls(b1.restic)}` : ''}; second coffer ${walls(b2.coffer)}${b2.restic ? `; restic ${walls(b2.restic)}` : ''} (medians below)`);
  // Only repository 0 of each tool is restored from.
  for (const tool of ['coffer', 'restic']) for (const repo of setRepos[tool].slice(1)) trash(repo);
}
{
  const got = restores(
    (out) => ['restore', '-q', 'latest', '--target', out, '--repo', cofferRepo, '--key-file', keyFile],
    (out) => ['--repo', setRepos.restic[0], 'restore', '-q', 'latest', '--target', out],
    join(work, 'restore'),
    (out) => sh('diff', ['-r', data, join(out, 'data')]),
  );
  rows.coffer.restore = got.coffer;
  if (got.restic) rows.restic.restore = got.restic;
  if (restoreRuns > 1) console.log(`restore wall times (s), ${restoreRuns} runs each, alternating: coffer ${walls(got.coffer)}${got.restic ? `; restic ${walls(got.restic)}` : ''} (medians below)`);
}

const mb = (kib) => (kib / 1024).toFixed(0);
console.log(`data set: scale ${scale}, ${(duBytes(data) / 2 ** 30).toFixed(2)} GiB; 2 cores; warm page cache for both tools`);
console.log('tool    step      wall_s  peak_rss_MiB  repo_bytes');
for (const [tool, steps] of Object.entries(rows)) {
  for (const [step, m] of Object.entries(steps)) {
    console.log(`${tool.padEnd(7)} ${step.padEnd(9)} ${m.wall.toFixed(2).padStart(6)}  ${mb(m.rss).padStart(12)}  ${m.size ?? ''}`);
  }
}

console.log(`floor: cp -r of the set ${floor.wall.toFixed(2)} s; coffer first backup / cp -r = ${(rows.coffer.backup1.wall / floor.wall).toFixed(2)}, restore / cp -r = ${(rows.coffer.restore.wall / floor.wall).toFixed(2)}`);
console.log(`machine: a first touch of new memory cost ${touchBefore} ms per GiB before the set's steps, ${touchProbe()} ms after (writing a GiB into the page cache pays about this; see touchProbe)`);

// A first backup to the front end's blob API over loopback, against the same backup to
// a local directory, both in this run on the same (current) data.
async function blobApiBackup() {
  const relayDir = join(work, 'relay');
  const profile = join(work, 'profile');
  trash(relayDir);
  trash(profile);
  mkdirSync(relayDir, { recursive: true });
  writeFileSync(join(relayDir, 'link.key'), randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  const port = 27600 + Math.floor(Math.random() * 300);
  const url = `http://127.0.0.1:${port}`;
  const relay = spawn(process.execPath, [join(root, 'packages/relay/dist/src/main.js')], {
    env: {
      ...process.env,
      COFFER_RELAY_DATA_DIR: relayDir,
      COFFER_RELAY_PORT: String(port),
      COFFER_RELAY_LINK_KEY_FILE: join(relayDir, 'link.key'),
      COFFER_RELAY_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let relayErr = '';
  relay.stderr.on('data', (d) => (relayErr += d));
  const exited = new Promise((r) => relay.once('exit', r));
  try {
    for (let i = 0; ; i++) {
      if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) break;
      if (i > 100 || relay.exitCode !== null) throw new Error(`coffer-relay did not start: ${relayErr.trim()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const pairs = [];
    for (let i = 0; i < blobRuns; i++) {
      // Each relay backup into a new account's empty repository (a fresh profile), as the
      // local one into a new directory: both first backups. Alternating which goes first.
      const prof = `${profile}-${i}`;
      trash(prof);
      const cli = (args) => sh(process.execPath, [coffer, ...args, '--profile', prof, '--server', url], { env: { ...process.env, ...cofferEnv, COFFER_ACCOUNT_PASSWORD: 'bench account password 42' } });
      cli(['account', 'create', '-q']);
      cli(['init', '-q', '--repo', 'coffer:', '--key-file', keyFile]);
      const localRepo = join(work, `coffer-local2-${i}`);
      trash(localRepo);
      sh(process.execPath, [coffer, 'init', '--repo', localRepo, '--key-file', keyFile, '-q']);
      const pair = {};
      for (const side of i % 2 === 0 ? ['relay', 'local'] : ['local', 'relay']) {
        pair[side] = side === 'relay' ? measure(process.execPath, [coffer, 'backup', '-q', '--repo', 'coffer:', '--key-file', keyFile, '--profile', prof, '--server', url, data], cofferEnv) : measure(process.execPath, [coffer, 'backup', '-q', '--repo', localRepo, '--key-file', keyFile, data], cofferEnv);
      }
      trash(localRepo);
      trash(prof);
      pairs.push(pair);
    }
    const ratios = pairs.map((p) => p.local.wall / p.relay.wall).sort((a, b) => a - b);
    const mid = pairs.find((p) => p.local.wall / p.relay.wall === ratios[(ratios.length - 1) >> 1]);
    return { relay: mid.relay, local: mid.local, ratio: ratios[(ratios.length - 1) >> 1], pairs };
  } finally {
    relay.kill('SIGTERM');
    await exited;
    trash(relayDir);
    trash(profile);
  }
}
let blob;
try {
  blob = await blobApiBackup();
  console.log(`coffer first backup to the relay's blob API (loopback) / to a local directory, ${blob.pairs.length} alternating pairs: ${blob.pairs.map((p) => `${p.relay.wall.toFixed(2)}/${p.local.wall.toFixed(2)} s`).join(', ')}; median pair ${blob.relay.wall.toFixed(2)} s (peak RSS ${mb(blob.relay.rss)} MiB) against ${blob.local.wall.toFixed(2)} s`);
} catch (e) {
  console.log(`blob API backup skipped: ${e.message.split('\n')[0]}`);
}

let rssScaleLine = '';
if (rssScale) {
  const d = join(work, 'data-rss');
  dataset(d, rssScale);
  const r = runCoffer(d, join(work, 'coffer-rss'), join(work, 'restore-rss'), false);
  console.log(`coffer at scale ${rssScale}: backup ${r.backup1.wall.toFixed(2)} s, peak RSS ${mb(r.backup1.rss)} MiB; restore ${r.restore.wall.toFixed(2)} s, peak RSS ${mb(r.restore.rss)} MiB`);
  rssScaleLine = ` (scale ${rssScale}: ${mb(Math.max(r.backup1.rss, r.restore.rss))} MiB)`;
  trash(d);
  trash(join(work, 'restore-rss'));
  trash(join(work, 'coffer-rss'));
}

const blobLine = blob ? `bench: blob-backup ratio=${blob.ratio.toFixed(2)} target=0.9` : '';
if (!haveRestic) {
  console.log('restic is not installed (apt-get install restic): no ratios against restic');
  if (blobLine) console.log(blobLine);
  process.exit(0);
}
const c = rows.coffer;
const r = rows.restic;
const ratio = (a, b) => (a / b).toFixed(2);
const peak = (s) => Math.max(s.backup1.rss, s.backup2.rss, s.restore.rss);
const added = (s) => s.backup2.size - s.backup1.size;
console.log(`second backup added: coffer ${added(c)} bytes, restic ${added(r)} bytes (ratio ${ratio(added(c), added(r))}, target 1.10)${rssScaleLine}`);
console.log(`bench: backup1 ratio=${ratio(c.backup1.wall, r.backup1.wall)} target=0.5`);
console.log(`bench: backup2 ratio=${ratio(c.backup2.wall, r.backup2.wall)} target=0.5`);
console.log(`bench: restore ratio=${ratio(c.restore.wall, r.restore.wall)} target=0.5`);
console.log(`bench: rss ratio=${ratio(peak(c), peak(r))} target=1.0`);
console.log(`coffer repository padding: --pad ${pad}`);
console.log(`bench: size ratio=${ratio(c.backup2.size, r.backup2.size)} target=1.05`);
if (blobLine) console.log(blobLine);

/**
 * Many small files: the make-tree set (default 50,000 files), first backup, a day of
 * changes (STEP 1), second backup, full restore, for Coffer and restic in this run, and
 * `cp -r` of the tree as the floor. With --tree-growth M, Coffer's backup and restore
 * again at M files, to show how peak memory grows with the number of files.
 */
async function treeBench() {
  const pristineTree = (n) => {
    const p = join(work, `tree0-${n}`);
    if (!existsSync(join(p, '.complete'))) {
      rmSync(p, { recursive: true, force: true });
      process.stderr.write(`building the ${n}-file tree in ${p} (once)…\n`);
      sh(makeTree, [join(p, 'tree'), String(n)]);
      writeFileSync(join(p, '.complete'), '');
    }
    return join(p, 'tree');
  };
  const fresh = (n, dir) => {
    trash(dir);
    sh('cp', ['-a', pristineTree(n), dir]);
    return dir;
  };
  const tree = fresh(treeFiles, join(work, 'tree'));
  sh('sync', []);
  const touchBefore = touchProbe();
  const floor = copyFloor(tree);
  const t = { coffer: {}, restic: {} };
  const treeRepos = benchRepos(join(work, 'tree-repo'));
  const repo = treeRepos.coffer[0];
  const rrepo = treeRepos.restic[0];
  const treeArgs = { coffer: (r) => ['backup', '-q', '--repo', r, '--key-file', keyFile, tree], restic: (r) => ['--repo', r, 'backup', '-q', tree] };
  trash(resticEnv.RESTIC_CACHE_DIR);
  const b1 = backupSteps(treeRepos, treeArgs, initRepo);
  sh(makeTree, [tree, String(treeFiles), '1']);
  sh('sync', []);
  const b2 = backupSteps(treeRepos, treeArgs);
  for (const tool of ['coffer', 'restic']) {
    t[tool].backup1 = b1[tool];
    t[tool].backup2 = b2[tool];
    for (const r of treeRepos[tool].slice(1)) trash(r);
  }
  if (backupRuns > 1) console.log(`tree backup wall times (s), ${backupRuns} runs each, alternating: first coffer ${walls(b1.coffer)}; restic ${walls(b1.restic)}; second coffer ${walls(b2.coffer)}; restic ${walls(b2.restic)} (medians below)`);
  const got = restores(
    (out) => ['restore', '-q', 'latest', '--target', out, '--repo', repo, '--key-file', keyFile],
    (out) => ['--repo', rrepo, 'restore', '-q', 'latest', '--target', out],
    join(work, 'tree-restore'),
    (out) => sh('diff', ['-r', '--no-dereference', tree, join(out, 'tree')]),
  );
  t.coffer.restore = got.coffer;
  t.restic.restore = got.restic;
  if (restoreRuns > 1) console.log(`tree restore wall times (s), ${restoreRuns} runs each, alternating: coffer ${walls(got.coffer)}; restic ${walls(got.restic)} (medians below)`);
  const mb = (kib) => (kib / 1024).toFixed(0);
  console.log(`tree: ${treeFiles} files, ${(duBytes(tree) / 2 ** 20).toFixed(0)} MiB; 2 cores; warm page cache for both tools`);
  console.log('tool    step      wall_s  peak_rss_MiB');
  for (const [tool, steps] of Object.entries(t)) {
    for (const [step, m] of Object.entries(steps)) console.log(`${tool.padEnd(7)} ${step.padEnd(9)} ${m.wall.toFixed(2).padStart(6)}  ${mb(m.rss).padStart(12)}`);
  }
  console.log(`floor: cp -r of the tree ${floor.wall.toFixed(2)} s; coffer first backup / cp -r = ${(t.coffer.backup1.wall / floor.wall).toFixed(2)}, restore / cp -r = ${(t.coffer.restore.wall / floor.wall).toFixed(2)}`);
  console.log(`machine: a first touch of new memory cost ${touchBefore} ms per GiB before the tree's steps, ${touchProbe()} ms after (see touchProbe)`);
  const peak = (s) => Math.max(s.backup1.rss, s.backup2.rss, s.restore.rss);
  let growthLine = '';
  if (treeGrowth) {
    const big = fresh(treeGrowth, join(work, 'tree-growth'));
    const grepo = join(work, 'coffer-growth-repo');
    trash(grepo);
    sh(process.execPath, [coffer, 'init', '--repo', grepo, '--key-file', keyFile, '-q']);
    const b = measure(process.execPath, [coffer, 'backup', '-q', '--repo', grepo, '--key-file', keyFile, big], cofferEnv);
    const b2 = measure(process.execPath, [coffer, 'backup', '-q', '--repo', grepo, '--key-file', keyFile, big], cofferEnv);
    const gout = join(work, 'tree-growth-restore');
    trash(gout);
    const r = measure(process.execPath, [coffer, 'restore', '-q', 'latest', '--target', gout, '--repo', grepo, '--key-file', keyFile], cofferEnv);
    sh('diff', ['-r', '--no-dereference', big, join(gout, 'tree-growth')]);
    for (const p of [gout, grepo, big]) trash(p);
    console.log(`coffer at ${treeGrowth} files: backup ${b.wall.toFixed(2)} s, ${mb(b.rss)} MiB; unchanged backup ${b2.wall.toFixed(2)} s, ${mb(b2.rss)} MiB; restore ${r.wall.toFixed(2)} s, ${mb(r.rss)} MiB`);
    growthLine = `bench: tree-rss-growth ratio=${(Math.max(b.rss, b2.rss, r.rss) / peak(t.coffer)).toFixed(2)} (peak RSS at ${treeGrowth} files / at ${treeFiles}; flat = 1.0, files x${(treeGrowth / treeFiles).toFixed(0)})`;
  }
  const ratio = (a, b) => (a / b).toFixed(2);
  console.log(`bench: tree-backup1 ratio=${ratio(t.coffer.backup1.wall, t.restic.backup1.wall)} target=0.5`);
  console.log(`bench: tree-backup2 ratio=${ratio(t.coffer.backup2.wall, t.restic.backup2.wall)} target=0.5`);
  console.log(`bench: tree-restore ratio=${ratio(t.coffer.restore.wall, t.restic.restore.wall)} target=0.5`);
  console.log(`bench: tree-rss ratio=${ratio(peak(t.coffer), peak(t.restic))} target=1.0`);
  console.log(`bench: tree-floor ratio=${ratio(t.coffer.backup1.wall, floor.wall)} (coffer first backup / cp -r)`);
  if (growthLine) console.log(growthLine);
  trash(tree);
}

/**
 * Per-stage costs on the chat set's own bytes (the SQLite database and the media files),
 * one thread, this run: the figures behind the choices in compress.ts, fastcdc.ts and
 * blob-writer.ts. Prints seconds per GiB for each stage.
 */
async function costs() {
  const { createCipheriv, createHmac } = await import('node:crypto');
  const { openSync, readSync, closeSync, readdirSync, statSync, fdatasyncSync, writeSync, unlinkSync } = await import('node:fs');
  const { FastCdc, DEFAULT_CHUNKER } = await import(join(root, 'packages/backup/dist/src/chunker/fastcdc.js'));
  const { chunkIdKeyOf } = await import(join(root, 'packages/backup/dist/src/crypto/repository-keys.js'));
  // zstd as the chunk workers run it: compress.ts's zstdCompressInto, one context reused for
  // every chunk. (@mongodb-js/zstd's compress, timed here before, builds a fresh ~4 MB
  // context per call: that cost, not the level's, filled its rows.)
  const { zstdCompressInto, zstdBound } = await import(join(root, 'packages/backup/dist/src/repository/compress.js'));
  const zout = Buffer.allocUnsafe(zstdBound(DEFAULT_CHUNKER.maxSize));
  const compress = (c, level) => zstdCompressInto(zout, c, level);
  const pristine = pristineSet('1');
  const files = [];
  const walk = (d) => {
    for (const n of readdirSync(d, { withFileTypes: true })) {
      if (n.isDirectory()) walk(join(d, n.name));
      else if (n.isFile() && n.name !== '.complete') files.push(join(d, n.name));
    }
  };
  walk(pristine);
  files.sort((a, b) => statSync(b).size - statSync(a).size);
  const SAMPLE = 64 * 1024 * 1024;
  const take = (list) => {
    const out = Buffer.allocUnsafe(SAMPLE);
    let got = 0;
    for (const f of list) {
      const fd = openSync(f, 'r');
      try {
        for (let n; got < SAMPLE && (n = readSync(fd, out, got, SAMPLE - got, null)) > 0; ) got += n;
      } finally {
        closeSync(fd);
      }
      if (got >= SAMPLE) break;
    }
    return out.subarray(0, got);
  };
  const db = take(files.slice(0, 1));
  const media = take(files.filter((f) => /\.(jpe?g|mp4|png|webp|ogg|opus|bin)$/i.test(f)));
  const gear = createHmac('sha256', 'bench').update('gear').digest();
  const gearBytes = Buffer.alloc(1024);
  for (let i = 0; i < 32; i++) createHmac('sha256', gear).update(String(i)).digest().copy(gearBytes, i * 32);
  const cdc = new FastCdc(gearBytes, DEFAULT_CHUNKER);
  const chunksOf = (b) => {
    const out = [];
    for (let s = 0; s < b.length; ) {
      const n = cdc.cut(b, s, b.length, true);
      out.push(b.subarray(s, s + n));
      s += n;
    }
    return out;
  };
  const perGiB = (secs, bytes) => ((secs * 2 ** 30) / bytes).toFixed(2);
  const time = async (fn) => {
    const t = process.hrtime.bigint();
    await fn();
    return Number(process.hrtime.bigint() - t) / 1e9;
  };
  // Every stage is timed twice and the better pass kept: a stage's first pass pays one-off
  // costs (a binding's load, JIT, and on this machine the first touch of the memory its
  // outputs take), which read as the stage's cost per GiB (zstd level 1 came out slower
  // than level 3 because it ran first).
  const best = async (fn) => Math.min(await time(fn), await time(fn));
  const rows = [];
  for (const [name, b] of [['db', db], ['media', media]]) {
    const chunks = chunksOf(b);
    rows.push([`fastcdc cut (${name})`, perGiB(await best(() => chunksOf(b)), b.length), '']);
    const key = Buffer.alloc(32, 7);
    // Chunk IDs as the chunk workers make them (repository-keys.ts): keyed BLAKE3 in version 4 repositories (`coffer init`'s default), HMAC-SHA256 in versions 1–3.
    for (const [label, fn] of [['keyed BLAKE3', 'blake3'], ['HMAC-SHA256', 'hmac-sha256']]) {
      const idKey = chunkIdKeyOf({ fn, key });
      // (The first pass loads the BLAKE3 binding: ~40 ms, 0.6 s/GiB of 64 MiB here.)
      rows.push([`${label} chunk IDs (${name})`, perGiB(await best(() => chunks.forEach((c) => idKey.id(c))), b.length), '']);
    }
    for (const level of [1, 3]) {
      let out = 0;
      const secs = await best(async () => {
        out = 0;
        for (const c of chunks) out += compress(c, level);
      });
      rows.push([`zstd level ${level} (${name})`, perGiB(secs, b.length), `ratio ${(out / b.length).toFixed(3)}`]);
    }
    let skipped = 0;
    const secs = await best(async () => {
      skipped = 0;
      for (const c of chunks) if (compress(c.subarray(0, 65536), 1) > 65536 - 2048) skipped++;
    });
    rows.push([`64 KiB zstd-1 sample test (${name})`, perGiB(secs, b.length), `${skipped}/${chunks.length} chunks judged incompressible`]);
    rows.push([`AES-256-GCM, 64 KiB segments (${name})`, perGiB(await best(() => {
      for (let o = 0; o < b.length; o += 65536) {
        const c = createCipheriv('aes-256-gcm', key, Buffer.alloc(12));
        c.update(b.subarray(o, o + 65536));
        c.final();
        c.getAuthTag();
      }
    }), b.length), '']);
  }
  // One fdatasync per 8 MiB pack, as blob-writer.ts commits them.
  const pack = db.subarray(0, 8 * 1024 * 1024);
  const tmp = join(work, '.fsync-probe');
  let syncSecs = 0;
  for (let i = 0; i < 5; i++) {
    const fd = openSync(tmp, 'w');
    writeSync(fd, pack);
    syncSecs += await time(() => fdatasyncSync(fd));
    closeSync(fd);
    unlinkSync(tmp);
  }
  rows.push(['fdatasync of an 8 MiB pack', perGiB(syncSecs / 5, pack.length), `${((syncSecs / 5) * 1000).toFixed(1)} ms each`]);
  console.log('stage                                      s/GiB (one thread)');
  for (const [n, v, note] of rows) console.log(`${n.padEnd(42)} ${String(v).padStart(6)}  ${note}`);
}
