// The blob half of `npm run bench:relay` (issue 13): the same data backed up with the
// `coffer` CLI to a local directory and to `coffer:` through a local relay (loopback,
// local blob store), in one run, alternating `rounds` times; then a restore of each.
// Prints `bench: relay-blob-backup ratio=X target=0.9` (X = local wall time / relay wall time,
// best round of each) and `bench: relay-blob-restore ratio=…` (information, no target);
// named apart from bench:backup's `blob-backup` (the whole 1 GiB set, median of pairs).
//
// It also uploads one large object (`objectMiB`, default 256) through the relay and
// reports the relay's RSS before and at its peak: bodies stream to the store, so the
// peak should not grow with the object.
//
// Data: ../shared/bench/make-dataset at `scale` (default 0.25, ~260 MiB), built once
// under COFFER_BENCH_DIR (default ./bench-work) and shared with bench:backup's cache.
//
// Run directly: `node scripts/bench-relay-blob.mjs [--scale S] [--rounds N]` is the same
// measurement; `node scripts/bench-relay-blob.mjs --ab OTHER_ROOT [--pairs N] [--scale S]`
// is an interleaved A/B of two builds (OTHER_ROOT: another checkout's root, built): per
// pair one local backup, then a backup to coffer: with each build (client and relay of
// that build, each its own relay), in alternating order; prints each pair's wall times,
// relay CPU (and its system part) and peak RSS (per backup), the local run's CPU, and the client's full
// collections (mark-compacts, from --trace-gc), and the medians, with the CPU the relay
// path costs beyond the local backup. The relays listen on COFFER_RELAY_HOST (default 127.0.0.1).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { basename, join } from 'node:path';
import { relayListening } from './relay-listening.mjs';

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.slice(-2000)}`);
  return r.stdout;
}

function dataset(root, work, scale) {
  const pristine = join(work, `data0-scale${scale}`);
  if (!existsSync(join(pristine, '.complete'))) {
    rmSync(pristine, { recursive: true, force: true });
    process.stderr.write(`bench:relay: building the scale-${scale} data set in ${pristine} (once)…\n`);
    sh(join(root, '..', 'shared', 'bench', 'make-dataset'), [pristine, String(scale), '0']);
    writeFileSync(join(pristine, '.complete'), '');
  }
  return pristine;
}

/** Wall seconds and peak RSS (KiB) of one command, under /usr/bin/time. */
function measure(work, cmd, args, env) {
  const t = join(work, '.time-blob');
  sh('/usr/bin/time', ['-f', '%e %M %U %S', '-o', t, cmd, ...args], { env: { ...process.env, ...env } });
  const [wall, rss, user, sys] = readFileSync(t, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, rss, cpu: user + sys, user, sys };
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** System CPU seconds of a process so far. */
function sysSeconds(pid) {
  return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[12]) / 100;
}

/**
 * Resets a process's peak RSS (VmHWM) so that it is measured from now (writing 5 to
 * /proc/PID/clear_refs: Linux, own processes); false where that is not possible.
 */
function resetPeakRss(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

const rssKiB = (pid, field) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

async function startRelay(root, dir, env, main = process.env.COFFER_BENCH_RELAY_MAIN || join(root, 'packages/relay/dist/src/main.js')) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'link.key'), randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  // COFFER_BENCH_RELAY_MAIN: another build of the relay (A/B); COFFER_BENCH_RELAY_NODE_ARGS: e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof'.
  const extra = process.env.COFFER_BENCH_RELAY_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...extra, main, 'serve'], {
    env: { ...process.env, COFFER_RELAY_DATA_DIR: dir, COFFER_RELAY_PORT: '0', COFFER_RELAY_ADMIN: '0', COFFER_RELAY_LINK_KEY_FILE: join(dir, 'link.key'), COFFER_RELAY_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const url = await relayListening(child);
  const exited = new Promise((r) => child.once('exit', r));
  return { child, url, stop: async () => (child.exitCode === null ? (child.kill('SIGTERM'), await exited) : undefined) };
}

/** PUTs `mib` MiB of generated bytes (chunked, like the client's streamed packs); resolves with the status. */
function putLarge(url, token, name, mib) {
  return new Promise((resolve, reject) => {
    const u = new URL(`${url}/v1/blobs/${name}`);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    const piece = randomBytes(1024 * 1024);
    let left = mib;
    const pump = () => {
      while (left > 0) {
        left--;
        if (!req.write(piece)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

/**
 * Runs the blob benchmark; returns the `bench:` lines (the caller prints them) after
 * printing the detail lines.
 */
export async function benchBlob({ root, scale = 0.25, rounds = 2, objectMiB = 256 }) {
  const work = process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work');
  mkdirSync(work, { recursive: true });
  const coffer = join(root, 'packages', 'cli', 'dist', 'src', 'main.js');
  const data = dataset(root, work, scale);
  const base = join(work, `relay-blob-${process.pid}`);
  rmSync(base, { recursive: true, force: true });
  mkdirSync(base, { recursive: true });
  const keyFile = join(base, 'key');
  writeFileSync(keyFile, '42'.repeat(32), { mode: 0o600 });
  const env = { COFFER_KEY: '', COFFER_REPOSITORY: '' };
  const relay = await startRelay(root, join(base, 'relay'), { COFFER_RELAY_MAX_OBJECT_BYTES: String(Math.max(64, objectMiB * 2) * 1024 * 1024), COFFER_RELAY_MAX_IN_FLIGHT_BYTES: String(Math.max(256, objectMiB * 2) * 1024 * 1024) });
  const lines = [];
  try {
    const runs = { local: [], relay: [], localRestore: [], relayRestore: [] };
    let restoreFailed;
    for (let round = 0; round < rounds; round++) {
      // Local directory.
      const repo = join(base, 'local-repo');
      rmSync(repo, { recursive: true, force: true });
      sh(process.execPath, [coffer, 'init', '-q', '--repo', repo, '--key-file', keyFile]);
      runs.local.push(measure(work, process.execPath, [coffer, 'backup', '-q', '--repo', repo, '--key-file', keyFile, data], env));
      const target1 = join(base, 'restore-local');
      rmSync(target1, { recursive: true, force: true });
      runs.localRestore.push(measure(work, process.execPath, [coffer, 'restore', '-q', 'latest', '--target', target1, '--repo', repo, '--key-file', keyFile], env));
      rmSync(target1, { recursive: true, force: true });
      rmSync(repo, { recursive: true, force: true });
      // coffer: through the relay, a fresh account (an empty namespace) per round.
      const profile = join(base, `profile-${round}`);
      const cli = (args) => sh(process.execPath, [coffer, ...args, '--profile', profile, '--server', relay.url], { env: { ...process.env, ...env, COFFER_ACCOUNT_PASSWORD: 'bench account password 42' } });
      cli(['account', 'create', '-q']);
      cli(['init', '-q', '--repo', 'coffer:', '--key-file', keyFile]);
      const flags = ['--repo', 'coffer:', '--key-file', keyFile, '--profile', profile, '--server', relay.url];
      const relayCpu0 = cpuSeconds(relay.child.pid);
      const relaySys0 = sysSeconds(relay.child.pid);
      runs.relay.push({ ...measure(work, process.execPath, [coffer, 'backup', '-q', ...flags, data], env), relayCpu: cpuSeconds(relay.child.pid) - relayCpu0, relaySys: sysSeconds(relay.child.pid) - relaySys0 });
      const target2 = join(base, 'restore-relay');
      rmSync(target2, { recursive: true, force: true });
      try {
        const relayCpu1 = cpuSeconds(relay.child.pid);
        runs.relayRestore.push({ ...measure(work, process.execPath, [coffer, 'restore', '-q', 'latest', '--target', target2, ...flags], env), relayCpu: cpuSeconds(relay.child.pid) - relayCpu1 });
        if (round === 0) sh('diff', ['-r', '-q', data, join(target2, basename(data))]);
      } catch (e) {
        restoreFailed = /coffer: error: .*/.exec(e.message)?.[0] ?? e.message.split('\n')[0];
      }
      rmSync(target2, { recursive: true, force: true });
    }
    const best = (xs) => xs.reduce((a, b) => (b.wall < a.wall ? b : a));
    const f = (x) => x.toFixed(2);
    const mib = (kib) => (kib / 1024).toFixed(0);
    const [l, r, lr] = [best(runs.local), best(runs.relay), best(runs.localRestore)];
    const rr = runs.relayRestore.length ? best(runs.relayRestore) : { wall: NaN, rss: NaN, cpu: NaN, relayCpu: NaN };
    console.log(`blob: data set scale ${scale} (${(Number(sh('du', ['-sb', data]).split('\t')[0]) / 2 ** 20).toFixed(0)} MiB), ${rounds} rounds, best of each`);
    console.log(`blob: backup to a local directory ${f(l.wall)} s (rounds ${runs.local.map((x) => f(x.wall)).join(', ')}; CPU ${f(l.cpu)} s, of it system ${f(l.sys)} s); to coffer: through the relay ${f(r.wall)} s (rounds ${runs.relay.map((x) => f(x.wall)).join(', ')}; CPU client ${f(r.cpu)} s (system ${f(r.sys)} s) + relay ${f(r.relayCpu)} s (system ${f(r.relaySys)} s)), client peak RSS ${mib(r.rss)} MiB (local ${mib(l.rss)} MiB)`);
    console.log(`blob: restore from the local directory ${f(lr.wall)} s (CPU ${f(lr.cpu)} s); from coffer: ${f(rr.wall)} s (CPU client ${f(rr.cpu)} s + relay ${f(rr.relayCpu)} s), client peak RSS ${mib(rr.rss)} MiB (local ${mib(lr.rss)} MiB)${restoreFailed ? `; a restore from coffer: FAILED: ${restoreFailed}` : ''}`);
    console.log(`blob: relay peak RSS over the backups and restores ${mib(rssKiB(relay.child.pid, 'VmHWM'))} MiB`);
    // Rounds alternate local and relay, so each pair ran under about the same load: the
    // median of the pairs' ratios says more than the best rounds on a shared machine.
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
    const pairs = (a, b) => a.slice(0, b.length).map((x, i) => x.wall / b[i].wall);
    console.log(`blob: per-round ratios (local/relay) backup ${pairs(runs.local, runs.relay).map(f).join(', ')} (median ${f(median(pairs(runs.local, runs.relay)))}); restore ${runs.relayRestore.length === runs.localRestore.length ? pairs(runs.localRestore, runs.relayRestore).map(f).join(', ') : '-'}`);
    lines.push(`bench: relay-blob-backup ratio=${(l.wall / r.wall).toFixed(2)} target=0.9`);
    lines.push(`bench: relay-blob-restore ratio=${(lr.wall / rr.wall).toFixed(2)} target=-`);

    if (objectMiB > 0) {
      // A fresh relay, so its peak is this upload's and nothing before it.
      await relay.stop();
      const big = await startRelay(root, join(base, 'relay-big'), { COFFER_RELAY_MAX_OBJECT_BYTES: String(objectMiB * 2 * 1024 * 1024), COFFER_RELAY_MAX_IN_FLIGHT_BYTES: String(objectMiB * 2 * 1024 * 1024), COFFER_RELAY_MAX_IN_FLIGHT_BYTES_PER_ACCOUNT: String(objectMiB * 2 * 1024 * 1024) });
      try {
        const profile = join(base, 'profile-big');
        const cli = (args) => sh(process.execPath, [coffer, ...args, '--profile', profile, '--server', big.url], { env: { ...process.env, ...env, COFFER_ACCOUNT_PASSWORD: 'bench account password 42' } });
        cli(['account', 'create', '-q']);
        const token = JSON.parse(readFileSync(join(profile, 'profile.json'), 'utf8')).token;
        if (typeof token !== 'string') throw new Error('no session token in the bench profile');
        // Warm the relay up with a small object first, so "before" includes a served upload.
        await putLarge(big.url, token, 'warm', 1);
        const before = rssKiB(big.child.pid, 'VmRSS');
        const t0 = Date.now();
        const status = await putLarge(big.url, token, 'big', objectMiB);
        const secs = (Date.now() - t0) / 1000;
        const peak = rssKiB(big.child.pid, 'VmHWM');
        console.log(`blob: one ${objectMiB} MiB object through the relay (chunked PUT): ${status}, ${secs.toFixed(2)} s; relay RSS before ${mib(before)} MiB, peak ${mib(peak)} MiB (+${mib(peak - before)} MiB)`);
      } finally {
        await big.stop();
      }
    }
    return lines;
  } finally {
    await relay.stop();
    rmSync(base, { recursive: true, force: true });
  }
}

/**
 * Interleaved A/B of two builds (`root` = A, `other` = B) on backups to coffer: (see the
 * header). Returns the `bench:` lines.
 */
export async function benchBlobAB({ root, other, scale = 0.25, pairs = 6 }) {
  const work = process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work');
  mkdirSync(work, { recursive: true });
  const data = dataset(root, work, scale);
  const base = join(work, `relay-blob-ab-${process.pid}`);
  rmSync(base, { recursive: true, force: true });
  mkdirSync(base, { recursive: true });
  const keyFile = join(base, 'key');
  writeFileSync(keyFile, '42'.repeat(32), { mode: 0o600 });
  const env = { COFFER_KEY: '', COFFER_REPOSITORY: '' };
  // A fresh account (an empty namespace) per backup: more sign-ups from one address than
  // the relay's default allows.
  const config = join(base, 'relay.json');
  writeFileSync(config, JSON.stringify({ limits: { accountCreation: { perSecond: 100, burst: 1000 } } }));
  const limits = { COFFER_RELAY_CONFIG: config, COFFER_RELAY_MAX_OBJECT_BYTES: String(512 * 1024 * 1024), COFFER_RELAY_MAX_IN_FLIGHT_BYTES: String(512 * 1024 * 1024) };
  const builds = { A: root, B: other };
  const relays = {};
  for (const k of ['A', 'B']) relays[k] = await startRelay(builds[k], join(base, `relay-${k}`), limits, join(builds[k], 'packages/relay/dist/src/main.js'));
  const rows = [];
  const f = (x, d = 2) => x.toFixed(d);
  try {
    for (let i = 0; i < pairs; i++) {
      const coffer = join(root, 'packages', 'cli', 'dist', 'src', 'main.js');
      const repo = join(base, 'local-repo');
      rmSync(repo, { recursive: true, force: true });
      sh(process.execPath, [coffer, 'init', '-q', '--repo', repo, '--key-file', keyFile]);
      const l = measure(work, process.execPath, [coffer, 'backup', '-q', '--repo', repo, '--key-file', keyFile, data], env);
      const row = { local: l.wall, localCpu: l.cpu };
      rmSync(repo, { recursive: true, force: true });
      for (const k of i % 2 === 0 ? ['A', 'B'] : ['B', 'A']) {
        const cli = join(builds[k], 'packages', 'cli', 'dist', 'src', 'main.js');
        const relay = relays[k];
        const profile = join(base, `profile-${k}-${i}`);
        const run = (args) => sh(process.execPath, [cli, ...args, '--profile', profile, '--server', relay.url], { env: { ...process.env, ...env, COFFER_ACCOUNT_PASSWORD: 'bench account password 42' } });
        run(['account', 'create', '-q']);
        run(['init', '-q', '--repo', 'coffer:', '--key-file', keyFile]);
        const cpu0 = cpuSeconds(relay.child.pid);
        const sys0 = sysSeconds(relay.child.pid);
        const relayPeak0 = resetPeakRss(relay.child.pid);
        const t = join(work, '.time-blob');
        const out = sh('/usr/bin/time', ['-f', '%e %U %S %M', '-o', t, process.execPath, '--trace-gc', cli, 'backup', '-q', '--repo', 'coffer:', '--key-file', keyFile, '--profile', profile, '--server', relay.url, data], { env: { ...process.env, ...env } });
        const [wall, user, sys, rss] = readFileSync(t, 'utf8').trim().split(/\s+/).map(Number);
        row[k] = { wall, cpu: user + sys, rss, relayCpu: cpuSeconds(relay.child.pid) - cpu0, relaySys: sysSeconds(relay.child.pid) - sys0, relayRss: relayPeak0 ? rssKiB(relay.child.pid, 'VmHWM') : NaN, fullGcs: (out.match(/Mark-Compact/g) ?? []).length };
      }
      rows.push(row);
      const side = (x) => `${f(x.wall)} s (client CPU ${f(x.cpu)} s, peak RSS ${(x.rss / 1024).toFixed(0)} MiB, relay CPU ${f(x.relayCpu)} s of it system ${f(x.relaySys)} s, relay peak RSS ${(x.relayRss / 1024).toFixed(0)} MiB, ${x.fullGcs} mark-compacts)`;
      console.log(`blob-ab: pair ${i + 1}: local ${f(row.local)} s (CPU ${f(row.localCpu)} s); A ${side(row.A)}; B ${side(row.B)}; B/A ${f(row.B.wall / row.A.wall, 3)}`);
    }
  } finally {
    for (const r of Object.values(relays)) await r.stop();
    rmSync(base, { recursive: true, force: true });
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const m = (fn) => median(rows.map(fn));
  console.log(`blob-ab: medians over ${rows.length} pairs: wall B/A ${f(m((r) => r.B.wall / r.A.wall), 3)}; client CPU A ${f(m((r) => r.A.cpu))} s, B ${f(m((r) => r.B.cpu))} s; relay CPU A ${f(m((r) => r.A.relayCpu))} s, B ${f(m((r) => r.B.relayCpu))} s; mark-compacts A ${m((r) => r.A.fullGcs)}, B ${m((r) => r.B.fullGcs)}; client peak RSS A ${(m((r) => r.A.rss) / 1024).toFixed(0)} MiB, B ${(m((r) => r.B.rss) / 1024).toFixed(0)} MiB; relay peak RSS A ${(m((r) => r.A.relayRss) / 1024).toFixed(0)} MiB, B ${(m((r) => r.B.relayRss) / 1024).toFixed(0)} MiB`);
  // What the relay path costs beyond the local backup on the same data (client CPU above
  // the local run's, plus all of the relay's): on a 2-core machine that is the gap.
  console.log(`blob-ab: CPU beyond the local backup (CPU ${f(m((r) => r.localCpu))} s): A ${f(m((r) => r.A.cpu - r.localCpu))} s client + ${f(m((r) => r.A.relayCpu))} s relay; B ${f(m((r) => r.B.cpu - r.localCpu))} s client + ${f(m((r) => r.B.relayCpu))} s relay`);
  return [
    `bench: blob-backup ratio A=${f(m((r) => r.local / r.A.wall))} B=${f(m((r) => r.local / r.B.wall))} target=0.9 (medians of the pairs)`,
    `bench: blob-backup-ab wall B/A=${f(m((r) => r.B.wall / r.A.wall), 3)}`,
  ];
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const { argNumber, argString } = await import('./bench-args.mjs');
  const root = join(new URL('.', import.meta.url).pathname, '..');
  const other = argString('ab', undefined);
  const lines = other
    ? await benchBlobAB({ root, other, scale: argNumber('scale', 0.25), pairs: argNumber('pairs', 6) })
    : await benchBlob({ root, scale: argNumber('scale', 0.25), rounds: argNumber('rounds', 2), objectMiB: argNumber('object-mib', 256) });
  for (const l of lines) console.log(l);
}
