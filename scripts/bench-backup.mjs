/* global fetch */
// `npm run bench:backup [-- --scale N] [-- --rss-scale N] [-- --pad off|auto|max]`
// Coffer against restic on the standard chat-app data set (../shared/bench/make-dataset),
// in one run on the same data: first backup, backup after a day of changes, full restore.
// Prints wall time, peak RSS and repository size per step, the ratio Coffer/restic, and
// ends with `bench: NAME ratio=X target=Y` lines. Also: a first backup through the front
// end's blob API over loopback against the same backup to a local directory
// (blob-backup: throughput ratio). With --rss-scale N it also runs Coffer's first backup
// and restore at scale N to show that peak memory stays flat.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { root } from './ensure-setup.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const scale = arg('scale', '1');
const rssScale = arg('rss-scale', undefined);
// The repository's size padding (spec §7.3); the size ratio depends on it.
const pad = arg('pad', 'auto');
const work = process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work');
const makeDataset = join(root, '..', 'shared', 'bench', 'make-dataset');
const coffer = join(root, 'packages', 'cli', 'dist', 'src', 'main.js');

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.slice(-2000)}`);
  return r.stdout;
}
function duBytes(p) {
  return Number(sh('du', ['-sb', p]).split('\t')[0]);
}
/** Runs a command under /usr/bin/time: wall seconds and peak RSS (KiB). */
function measure(cmd, args, env = {}) {
  const t = join(work, '.time');
  sh('/usr/bin/time', ['-f', '%e %M', '-o', t, cmd, ...args], { env: { ...process.env, ...env } });
  const [wall, rss] = readFileSync(t, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, rss };
}
function dataset(dir, s) {
  const pristine = join(work, `data0-scale${s}`);
  if (!existsSync(join(pristine, '.complete'))) {
    rmSync(pristine, { recursive: true, force: true });
    process.stderr.write(`building the scale-${s} data set in ${pristine} (once)…\n`);
    sh(makeDataset, [pristine, s, '0']);
    writeFileSync(join(pristine, '.complete'), '');
  }
  rmSync(dir, { recursive: true, force: true });
  sh('cp', ['-a', pristine, dir]);
  rmSync(join(dir, '.complete'));
}

mkdirSync(work, { recursive: true });
const keyFile = join(work, 'key');
writeFileSync(keyFile, '42'.repeat(32), { mode: 0o600 });
const cofferEnv = { COFFER_KEY: '', COFFER_REPOSITORY: '' };
const rows = {};

function runCoffer(data, repo, restoreDir, withChanges) {
  rmSync(repo, { recursive: true, force: true });
  sh(process.execPath, [coffer, 'init', '--repo', repo, '--key-file', keyFile, '-q']);
  const out = {};
  out.backup1 = measure(process.execPath, [coffer, 'backup', '-q', '--repo', repo, '--key-file', keyFile, data], cofferEnv);
  out.backup1.size = duBytes(repo);
  if (withChanges) {
    sh(makeDataset, [data, scale, '1']);
    out.backup2 = measure(process.execPath, [coffer, 'backup', '-q', '--repo', repo, '--key-file', keyFile, data], cofferEnv);
    out.backup2.size = duBytes(repo);
  }
  rmSync(restoreDir, { recursive: true, force: true });
  out.restore = measure(process.execPath, [coffer, 'restore', '-q', 'latest', '--target', restoreDir, '--repo', repo, '--key-file', keyFile], cofferEnv);
  sh('diff', ['-r', data, join(restoreDir, basename(data))]);
  return out;
}

const data = join(work, 'data');
dataset(data, scale);
const haveRestic = spawnSync('restic', ['version']).status === 0;
const resticRepo = join(work, 'restic');
const resticEnv = { RESTIC_PASSWORD: 'bench-password', RESTIC_CACHE_DIR: join(work, 'restic-cache') };
sh('sync', []);

// First backups, then a day of changes, then second backups, then restores: both tools
// see exactly the same bytes at each step.
const cofferRepo = join(work, 'coffer-repo');
rmSync(cofferRepo, { recursive: true, force: true });
sh(process.execPath, [coffer, 'init', '--repo', cofferRepo, '--key-file', keyFile, '--pad', pad, '-q']);
const backupArgs = ['backup', '-q', '--repo', cofferRepo, '--key-file', keyFile, data];
rows.coffer = { backup1: measure(process.execPath, [coffer, ...backupArgs], cofferEnv) };
rows.coffer.backup1.size = duBytes(cofferRepo);
if (haveRestic) {
  rmSync(resticRepo, { recursive: true, force: true });
  rmSync(resticEnv.RESTIC_CACHE_DIR, { recursive: true, force: true });
  sh('restic', ['init', '-q', '--repo', resticRepo], { env: { ...process.env, ...resticEnv } });
  rows.restic = { backup1: measure('restic', ['--repo', resticRepo, 'backup', '-q', data], resticEnv) };
  rows.restic.backup1.size = duBytes(resticRepo);
}
sh(makeDataset, [data, scale, '1']);
sh('sync', []);
rows.coffer.backup2 = measure(process.execPath, [coffer, ...backupArgs], cofferEnv);
rows.coffer.backup2.size = duBytes(cofferRepo);
if (haveRestic) {
  rows.restic.backup2 = measure('restic', ['--repo', resticRepo, 'backup', '-q', data], resticEnv);
  rows.restic.backup2.size = duBytes(resticRepo);
}
const cofferOut = join(work, 'restore-coffer');
rmSync(cofferOut, { recursive: true, force: true });
rows.coffer.restore = measure(process.execPath, [coffer, 'restore', '-q', 'latest', '--target', cofferOut, '--repo', cofferRepo, '--key-file', keyFile], cofferEnv);
sh('diff', ['-r', data, join(cofferOut, 'data')]);
if (haveRestic) {
  const resticOut = join(work, 'restore-restic');
  rmSync(resticOut, { recursive: true, force: true });
  rows.restic.restore = measure('restic', ['--repo', resticRepo, 'restore', '-q', 'latest', '--target', resticOut], resticEnv);
  rmSync(resticOut, { recursive: true, force: true });
}
rmSync(cofferOut, { recursive: true, force: true });

const mb = (kib) => (kib / 1024).toFixed(0);
console.log(`data set: scale ${scale}, ${(duBytes(data) / 2 ** 30).toFixed(2)} GiB; 2 cores; warm page cache for both tools`);
console.log('tool    step      wall_s  peak_rss_MiB  repo_bytes');
for (const [tool, steps] of Object.entries(rows)) {
  for (const [step, m] of Object.entries(steps)) {
    console.log(`${tool.padEnd(7)} ${step.padEnd(9)} ${m.wall.toFixed(2).padStart(6)}  ${mb(m.rss).padStart(12)}  ${m.size ?? ''}`);
  }
}

// A first backup to the front end's blob API over loopback, against the same backup to
// a local directory, both in this run on the same (current) data.
async function blobApiBackup() {
  const relayDir = join(work, 'relay');
  const profile = join(work, 'profile');
  rmSync(relayDir, { recursive: true, force: true });
  rmSync(profile, { recursive: true, force: true });
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
    const cli = (args, extra = {}) => sh(process.execPath, [coffer, ...args, '--profile', profile, '--server', url], { env: { ...process.env, ...cofferEnv, COFFER_ACCOUNT_PASSWORD: 'bench account password 42', ...extra } });
    cli(['account', 'create', '-q']);
    cli(['init', '-q', '--repo', 'coffer:', '--key-file', keyFile]);
    const t = measure(process.execPath, [coffer, 'backup', '-q', '--repo', 'coffer:', '--key-file', keyFile, '--profile', profile, '--server', url, data], cofferEnv);
    const localRepo = join(work, 'coffer-local2');
    rmSync(localRepo, { recursive: true, force: true });
    sh(process.execPath, [coffer, 'init', '--repo', localRepo, '--key-file', keyFile, '-q']);
    const l = measure(process.execPath, [coffer, 'backup', '-q', '--repo', localRepo, '--key-file', keyFile, data], cofferEnv);
    rmSync(localRepo, { recursive: true, force: true });
    return { relay: t, local: l };
  } finally {
    relay.kill('SIGTERM');
    await exited;
    rmSync(relayDir, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
  }
}
let blob;
try {
  blob = await blobApiBackup();
  console.log(`coffer first backup to the relay's blob API (loopback): ${blob.relay.wall.toFixed(2)} s, peak RSS ${mb(blob.relay.rss)} MiB; to a local directory: ${blob.local.wall.toFixed(2)} s`);
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
  rmSync(d, { recursive: true, force: true });
  rmSync(join(work, 'restore-rss'), { recursive: true, force: true });
  rmSync(join(work, 'coffer-rss'), { recursive: true, force: true });
}

const blobLine = blob ? `bench: blob-backup ratio=${(blob.local.wall / blob.relay.wall).toFixed(2)} target=0.7` : '';
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
