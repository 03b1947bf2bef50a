// `npm run bench:vault [-- --rounds N] [-- --seconds N] [-- --only software|pkcs11] [-- --mode phased|live] [-- --variant-node-args '--flag …'] [-- --variant-main OTHER/packages/vault/dist/src/server/main.js]`
// Profile the vault: COFFER_BENCH_VAULT_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'
// The vault's stdout (V8's --trace-gc-nvp, say) to a file: COFFER_BENCH_VAULT_STDOUT=/tmp/vault.out
//
// The Backup Key Vault's CPU per recovery against the bare OPAQUE library, measured in the
// same run, interleaved, so load from other work on the shared machine falls on both.
//
// Method (issue 13):
//   - ceiling: one Node process (scripts/bench-vault-ceiling.mjs) pinned with `taskset` to
//     the vault's core (--vault-cpu), the same process model as the vault: @serenity-kit/
//     opaque server startLogin + finishLogin on a registered record, `serverSetup` passed
//     as a string as the vault does (the library decodes it on every call, in both). Only
//     the server calls are timed, by the process's CPU time. = logins per CPU-second.
//   - vault: one coffer-vault process per platform (software; SoftHSM2 over PKCS#11 when
//     installed), pinned to the same core, full recoveries over HTTP on 127.0.0.1 (both
//     round trips, HPKE, record sealing, SQLite with fsync, the anchor, per-request logging
//     at info to /dev/null). Vault CPU = utime + stime of all its threads (/proc/<pid>/stat).
//   - load generator: --workers processes (scripts/bench-vault-worker.mjs) pinned to the
//     other core (--load-cpu) during the timed phases. On a 2-core machine the clients'
//     own OPAQUE and HPKE work (~2–5 ms per recovery, more than the vault's) would starve
//     the vault (it idled ~70% of the window with clients computing live), and a vault that
//     idles spends more CPU per recovery (smaller group commits, more wake-ups). So by
//     default (--mode phased) a window is a series of cycles, each over every account once:
//     the clients seal the login-starts (untimed, vault idle), send them all (TIMED), run
//     OPAQUE finishLogin and seal the login-finishes (untimed), send them all (TIMED), then
//     open the answers and check the released key (untimed). In the timed phases the
//     clients only do HTTP; the vault's CPU is counted in the timed phases only. Printed:
//     how busy the vault's core was there and how long its event loop waited for that core
//     (schedstat: other processes on it); busy + waiting ≥ 90% means the vault, not the
//     load generator, set the pace. The clients' CPU per recovery, timed and untimed, too.
//     --mode live: the earlier method (precomputed login-starts, finishLogin live during
//     the window), for comparison; its client CPU per recovery is printed.
//   - rounds: --rounds N (default 5) rounds, each: a ceiling window, then each platform's
//     vault window, in an order that rotates per round. Per round, ratio = vault recoveries
//     per vault CPU-second / the ceiling of the same round. Printed: the median ratio over
//     rounds and its spread (min–max), with the ceiling's own spread.
//   - accounts: --accounts (768) registered per vault; a phased cycle logs each in once, and
//     the vault allows 64 logins per account per 5 minutes, so on a fast machine many more
//     rounds need more accounts (a `rate-limited` count in the output says so).
// The client KSF is INSECURE_FAST_KSF_FOR_TESTING: argon2id runs on the client, never on
// the vault, so it is no part of the vault's cost.
import { fork, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { root } from './ensure-setup.mjs';
import { argNumber } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 5);
const SECONDS = argNumber('seconds', 5); // per vault window: timed phases (phased) or the live window
const CEILING_SECONDS = argNumber('ceiling-seconds', 3);
const modeAt = process.argv.indexOf('--mode');
const MODE = modeAt >= 0 ? process.argv[modeAt + 1] : 'phased';
if (MODE !== 'phased' && MODE !== 'live') throw new Error(`--mode: phased or live, not ${MODE}`);
const WORKERS = argNumber('workers', 2); // load-generator processes
const LANES = argNumber('lanes', 16); // concurrent recoveries per worker
const VAULT_CPU = argNumber('vault-cpu', 0);
const LOAD_CPU = argNumber('load-cpu', 1);
const onlyAt = process.argv.indexOf('--only');
const ONLY = onlyAt >= 0 ? process.argv[onlyAt + 1] : null; // one platform's run (before/after comparisons)
// Enough accounts that no account reaches the per-account login rate limit
// (loginsPerWindow, at most 64 per 5 minutes) during a run; each lane owns a disjoint
// slice, so no two recoveries of one account overlap.
const ACCOUNTS = argNumber('accounts', 768);
// COFFER_BENCH_VAULT_MAIN: another build's main.js, for before/after comparisons.
const MAIN = process.env.COFFER_BENCH_VAULT_MAIN ?? join(root, 'packages', 'vault', 'dist', 'src', 'server', 'main.js');
const WORKER = join(root, 'scripts', 'bench-vault-worker.mjs');
const CEILING = join(root, 'scripts', 'bench-vault-ceiling.mjs');
const PROTOCOL = join(root, 'packages', 'protocol', 'dist', 'src', 'index.js');
const NODE_CRYPTO = join(root, 'packages', 'vault', 'dist', 'src', 'server', 'node-crypto.js');

const TASKSET = existsSync('/usr/bin/taskset') ? '/usr/bin/taskset' : null;
const ALL_CPUS = `0-${cpus().length - 1}`;
const fmt = (x, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

// ── 2. a pinned vault process and forked load generators ─────────────────────────────
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime (all threads), ticks of 10 ms
}

/** CPU seconds split: the main thread (event loop) user/system, all other threads (libuv pool: fsyncs, anchor writes; GC helpers; PKCS#11 anchor worker) user/system. */
function cpuSplit(pid) {
  const out = { mainUser: 0, mainSys: 0, otherUser: 0, otherSys: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let f;
    try {
      f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
    } catch {
      continue; // a thread that just ended
    }
    const main = Number(tid) === pid;
    out[main ? 'mainUser' : 'otherUser'] += Number(f[11]) / 100;
    out[main ? 'mainSys' : 'otherSys'] += Number(f[12]) / 100;
  }
  return out;
}
const splitDelta = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, b[k] - a[k]]));
const splitAdd = (into, d) => {
  for (const [k, x] of Object.entries(d)) into[k] = (into[k] ?? 0) + x;
};

/** Seconds the process's main thread (its event loop) spent runnable but waiting for a CPU (schedstat run delay). */
function waitSeconds(pid) {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
  } catch {
    return NaN;
  }
}

function pin(pid, cpu) {
  if (!TASKSET) return;
  const r = spawnSync(TASKSET, ['-a', '-pc', String(cpu), String(pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset: ${r.stderr}`);
}

async function startVault(env, nodeArgs = process.env.COFFER_BENCH_VAULT_NODE_ARGS?.split(' ').filter(Boolean) ?? [], main = MAIN) {
  const node = [process.execPath, ...nodeArgs, main, 'serve'];
  const cmd = TASKSET ? [TASKSET, ['-c', String(VAULT_CPU), ...node]] : [node[0], node.slice(1)];
  // The vault runs with its default log level (one JSON line per request at info, to
  // /dev/null here): the per-request logging is part of what a recovery costs.
  const child = spawn(cmd[0], cmd[1], { env: { ...process.env, COFFER_VAULT_PORT: '0', COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1', COFFER_VAULT_LOGINS_PER_WINDOW: '64', ...env }, stdio: ['ignore', process.env.COFFER_BENCH_VAULT_STDOUT ? openSync(process.env.COFFER_BENCH_VAULT_STDOUT, 'a') : 'ignore', 'pipe'] });
  let err = '';
  const url = await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      err += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(err);
      if (m && /metrics \(admin listener\) at/.test(err)) resolve(m[1]);
    });
    child.once('exit', (c) => reject(new Error(`coffer-vault exited ${c}: ${err}`)));
  });
  const adminUrl = /metrics \(admin listener\) at (http:\/\/[\d.]+:\d+)/.exec(err)?.[1];
  /** Group commit: log entries and record changes so far (the admin listener's metrics). */
  const commits = async () => {
    if (!adminUrl) return null;
    const text = await (await fetch(`${adminUrl}/metrics`)).text();
    const num = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    return { entries: num('coffer_vault_log_batch_records_count'), changes: num('coffer_vault_log_batch_records_sum'), expired: num('coffer_vault_commit_delay_expired_total') };
  };
  return { child, url, commits, stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }) };
}

function startWorker() {
  const w = fork(WORKER, [], { env: { ...process.env, COFFER_BENCH_WORKER: JSON.stringify({ root, protocolPath: PROTOCOL, nodeCryptoPath: NODE_CRYPTO }) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map();
  w.on('message', (m) => {
    const p = waiting.get(m.type);
    if (!p) return;
    waiting.delete(m.type);
    if (m.ok) p.resolve(m);
    else p.reject(new Error(`bench worker ${m.type}: ${m.error}`));
  });
  const call = (type, msg = {}) =>
    new Promise((resolve, reject) => {
      waiting.set(type, { resolve, reject });
      if (type !== 'ready') w.send({ type, ...msg });
    });
  return { w, call, ready: call('ready') };
}

/** A vault process with its load generators, set up (accounts registered), idle. */
async function openVault(name, env, bundleEnv, nodeArgs, main = MAIN) {
  const vault = await startVault(env, nodeArgs, main);
  const workers = [];
  const v = { name, vault, workers, windows: [] };
  try {
    const out = spawnSync(process.execPath, [main, 'bundle'], { env: { ...process.env, ...bundleEnv }, encoding: 'utf8' });
    if (out.status !== 0) throw new Error(out.stderr);
    for (let i = 0; i < WORKERS; i++) workers.push(startWorker());
    await Promise.all(workers.map((w) => w.ready));
    const accounts = Array.from({ length: ACCOUNTS }, (_, i) => `bench-${i}`);
    await Promise.all(workers.map((w, k) => w.call('setup', { url: vault.url, bundle: out.stdout, lanes: LANES, accounts: accounts.filter((_, i) => i % WORKERS === k) })));
    return v;
  } catch (err) {
    await closeVault(v);
    throw err;
  }
}

async function closeVault(v) {
  for (const w of v.workers) w.w.kill();
  await v.vault.stop();
}

const addFailures = (into, from) => {
  for (const [k, n] of Object.entries(from ?? {})) into[k] = (into[k] ?? 0) + n;
};

/**
 * Phased cycles until the timed phases add up to SECONDS. Only the two sending phases are
 * timed (vault CPU, wall, its core's wait); the workers run on the load core there and on
 * any core in the untimed client work between them.
 */
async function windowPhased(v) {
  const { vault, workers } = v;
  const pid = vault.child.pid;
  const perLane = Math.ceil(ACCOUNTS / WORKERS / LANES);
  const w = { n: 0, ok: 0, failures: {}, wall: 0, cpu: 0, waited: 0, loadTimedMs: 0, loadUntimedMs: 0, split: {} };
  const commits0 = await vault.commits();
  const phase = async (type) => {
    for (const x of workers) pin(x.w.pid, LOAD_CPU);
    const c0 = cpuSeconds(pid);
    const s0 = cpuSplit(pid);
    const q0 = waitSeconds(pid);
    const t0 = performance.now();
    const r = await Promise.all(workers.map((x) => x.call(type)));
    w.wall += (performance.now() - t0) / 1000;
    w.cpu += cpuSeconds(pid) - c0;
    splitAdd(w.split, splitDelta(s0, cpuSplit(pid)));
    w.waited += waitSeconds(pid) - q0;
    for (const x of workers) pin(x.w.pid, ALL_CPUS);
    w.loadTimedMs += r.reduce((s, x) => s + x.cpuMs, 0);
    return r;
  };
  while (w.wall < SECONDS) {
    const prepared = await Promise.all(workers.map((x) => x.call('prepare', { perLane })));
    await phase('starts');
    const fp = await Promise.all(workers.map((x) => x.call('finishPrepare')));
    await phase('finishes');
    const verified = await Promise.all(workers.map((x) => x.call('verify')));
    for (const r of [...fp, ...verified]) addFailures(w.failures, r.failures);
    w.n += prepared.reduce((s, r) => s + r.items, 0);
    w.ok += verified.reduce((s, r) => s + r.ok, 0);
    w.loadUntimedMs += [...prepared, ...fp, ...verified].reduce((s, r) => s + r.cpuMs, 0);
  }
  const commits1 = await vault.commits();
  return finishWindow(w, commits0, commits1);
}

/** The earlier method: precomputed login-starts, the rest of the client work live in the window. */
async function windowLive(v, ceil) {
  const { vault, workers } = v;
  const pid = vault.child.pid;
  const perWorker = Math.ceil((ceil * SECONDS * 1.05) / WORKERS);
  const pre = await Promise.all(workers.map((x) => x.call('precompute', { perWorker })));
  for (const x of workers) pin(x.w.pid, LOAD_CPU);
  const commits0 = await vault.commits();
  const c0 = cpuSeconds(pid);
  const q0 = waitSeconds(pid);
  const t0 = Date.now() + 200;
  const results = await Promise.all(workers.map((x) => x.call('run', { deadlineEpochMs: t0 + SECONDS * 1000 })));
  const w = { wall: (Date.now() - t0) / 1000, cpu: cpuSeconds(pid) - c0, waited: waitSeconds(pid) - q0, failures: {} };
  for (const x of workers) pin(x.w.pid, ALL_CPUS);
  const commits1 = await vault.commits();
  for (const r of results) addFailures(w.failures, r.failures);
  w.ok = results.reduce((s, r) => s + r.latencies.length, 0);
  w.n = w.ok + Object.values(w.failures).reduce((s, x) => s + x, 0);
  w.loadTimedMs = results.reduce((s, r) => s + r.cpuMs, 0);
  w.preMsPerItem = pre.reduce((s, r) => s + r.ms, 0) / pre.reduce((s, r) => s + r.items, 0); // precompute wall per item (both cores)
  w.live = results.reduce((s, r) => s + r.live, 0);
  return finishWindow(w, commits0, commits1);
}

function finishWindow(w, commits0, commits1) {
  return {
    ...w,
    rate: w.ok / w.wall,
    perCpu: w.ok / w.cpu,
    cpuMs: (w.cpu * 1000) / w.ok,
    vaultBusy: w.cpu / w.wall,
    vaultWaited: w.waited / w.wall,
    loadMs: w.loadTimedMs / w.ok,
    loadUntimedMsPer: w.loadUntimedMs / w.ok,
    loadBusy: w.loadTimedMs / 1000 / w.wall,
    batch: commits0 && commits1 ? (commits1.changes - commits0.changes) / (commits1.entries - commits0.entries) : NaN,
    entriesPerRecovery: commits0 && commits1 ? (commits1.entries - commits0.entries) / w.ok : NaN,
    expiredPerRecovery: commits0 && commits1 ? (commits1.expired - commits0.expired) / w.ok : NaN,
  };
}

/** The ceiling process, pinned to the vault's core; `window(seconds)` → logins per CPU-second. */
async function startCeiling() {
  const c = fork(CEILING, [], { env: { ...process.env, COFFER_BENCH_CEILING: JSON.stringify({ protocolPath: PROTOCOL }) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  pin(c.pid, VAULT_CPU);
  let pending = null;
  c.on('message', (m) => {
    const p = pending;
    pending = null;
    if (!p) return;
    if (m.ok) p.resolve(m);
    else p.reject(new Error(`bench ceiling: ${m.error}`));
  });
  const call = (msg) =>
    new Promise((resolve, reject) => {
      pending = { resolve, reject };
      if (msg) c.send(msg);
    });
  await call(null); // ready (after its warm-up)
  return {
    window: async (seconds) => {
      const r = await call({ type: 'window', seconds });
      return { perCpu: r.n / r.cpuSeconds, perWall: r.n / r.wallSeconds };
    },
    stop: () => c.kill(),
  };
}

function softhsmToken(dir) {
  const util = process.env.COFFER_SOFTHSM_UTIL ?? '/usr/bin/softhsm2-util';
  const module = process.env.COFFER_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';
  if (!existsSync(util) || !existsSync(module)) return null;
  mkdirSync(join(dir, 'tokens'));
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const r = spawnSync(util, ['--init-token', '--free', '--label', 'coffer-bench', '--pin', '1234', '--so-pin', '123456'], { env: { ...process.env, SOFTHSM2_CONF: conf } });
  if (r.status !== 0) return null;
  return { SOFTHSM2_CONF: conf, COFFER_VAULT_PLATFORM: 'pkcs11', COFFER_VAULT_PKCS11_MODULE: module, COFFER_VAULT_PKCS11_TOKEN_LABEL: 'coffer-bench', COFFER_VAULT_PKCS11_PIN: '1234' };
}

const work = mkdtempSync(join(tmpdir(), 'coffer-bench-vault-'));
const vaults = [];
let ceilingProc = null;
try {
  process.stderr.write(
    `bench:vault: ${ROUNDS} interleaved rounds (ceiling ${CEILING_SECONDS}s, then each vault ${SECONDS}s of ${MODE === 'phased' ? 'timed phases' : 'live load'}); ` +
      `vault and ceiling pinned to CPU ${TASKSET ? VAULT_CPU : '(taskset missing: not pinned)'}, ${WORKERS} load-generator processes x ${LANES} lanes on CPU ${TASKSET ? LOAD_CPU : '(not pinned)'} while timed; ` +
      `client KSF: INSECURE_FAST_KSF_FOR_TESTING (argon2id runs on the client, not the vault)\n`,
  );
  ceilingProc = await startCeiling();
  const swDir = join(work, 'software');
  if (ONLY !== 'pkcs11') vaults.push(await openVault('vault-software', { COFFER_VAULT_DATA_DIR: swDir }, { COFFER_VAULT_DATA_DIR: swDir }));
  // --variant-node-args '…': a second software vault started with these node flags, in the same rounds (e.g. GC sizing).
  const variantAt = process.argv.indexOf('--variant-node-args');
  if (variantAt >= 0 && ONLY !== 'pkcs11') {
    const dir = join(work, 'software-variant');
    vaults.push(await openVault(`vault-software ${process.argv[variantAt + 1]}`, { COFFER_VAULT_DATA_DIR: dir }, { COFFER_VAULT_DATA_DIR: dir }, process.argv[variantAt + 1].split(' ').filter(Boolean)));
  }
  // --variant-main PATH: the same platforms once more from another build's main.js (A/B of
  // two builds in the same rounds; e.g. /work/main/packages/vault/dist/src/server/main.js).
  const variantMainAt = process.argv.indexOf('--variant-main');
  const VARIANT_MAIN = variantMainAt >= 0 ? process.argv[variantMainAt + 1] : null;
  // COFFER_BENCH_VARIANT_ENV='K=V,K2=V2': extra environment for the variant build's software
  // vault only (e.g. COFFER_VAULT_LOG_LEVEL=warn with this build's own main.js: what the
  // per-request log line costs in the real process).
  const VARIANT_ENV = Object.fromEntries((process.env.COFFER_BENCH_VARIANT_ENV ?? '').split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  if (VARIANT_MAIN && ONLY !== 'pkcs11') {
    const dir = join(work, 'software-variant-main');
    vaults.push(await openVault('vault-software (variant build)', { ...VARIANT_ENV, COFFER_VAULT_DATA_DIR: dir }, { COFFER_VAULT_DATA_DIR: dir }, undefined, VARIANT_MAIN));
  }
  const hsmVaults = [['vault-pkcs11', MAIN, 'pkcs11'], ...(VARIANT_MAIN ? [['vault-pkcs11 (variant build)', VARIANT_MAIN, 'pkcs11-variant-main']] : [])];
  for (const [name, main, sub] of ONLY === 'software' ? [] : hsmVaults) {
    const hsmDir = join(work, sub);
    mkdirSync(hsmDir);
    const hsm = softhsmToken(hsmDir);
    if (!hsm) {
      console.log('SoftHSM2 not installed: skipping the PKCS#11 run');
      break;
    }
    const env = { ...hsm, COFFER_VAULT_DATA_DIR: hsmDir };
    const made = spawnSync(process.execPath, [main, 'keys', 'create'], { env: { ...process.env, ...env }, encoding: 'utf8' });
    if (made.status !== 0) throw new Error(made.stderr);
    vaults.push(await openVault(name, env, env, undefined, main));
  }
  for (const v of vaults) await (MODE === 'phased' ? windowPhased(v) : windowLive(v, 1000)); // warm-up window each: not counted
  const ceilings = [];
  for (let round = 0; round < ROUNDS; round++) {
    const order = [null, ...vaults];
    for (let k = 0; k < round % order.length; k++) order.push(order.shift());
    let ceil = null;
    const pendingVaults = [];
    for (const v of order) {
      if (v === null) {
        ceil = await ceilingProc.window(CEILING_SECONDS);
        ceilings.push(ceil);
        continue;
      }
      const r = MODE === 'phased' ? await windowPhased(v) : await windowLive(v, ceilings.at(-1)?.perCpu ?? 1000);
      v.windows.push(r);
      pendingVaults.push(r);
    }
    for (const r of pendingVaults) r.ratio = r.perCpu / ceil.perCpu;
    console.log(
      `round ${round + 1}: ceiling ${fmt(ceil.perCpu)} logins per CPU-second; ` +
        vaults.map((v) => { const r = v.windows.at(-1); return `${v.name} ${fmt(r.perCpu)} recoveries per vault CPU-second (${fmt(r.cpuMs, 2)} ms, core ${fmt(r.vaultBusy * 100)}% busy) ratio ${fmt(r.ratio, 2)}`; }).join('; '),
    );
  }
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
  const spread = (xs, d = 2) => `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}`;
  const cp = ceilings.map((c) => c.perCpu);
  console.log(`ceiling         @serenity-kit/opaque server startLogin+finishLogin in one process pinned to the vault's core: median ${fmt(median(cp))} logins per CPU-second (rounds ${spread(cp, 0)}; ${fmt(median(ceilings.map((c) => c.perWall)))}/s by wall clock)`);
  const targets = { 'vault-software': 0.6, 'vault-pkcs11': 0.5 };
  for (const v of vaults) {
    const W = v.windows;
    const m = (f) => median(W.map(f));
    const failures = {};
    for (const r of W) addFailures(failures, r.failures);
    const failed = Object.entries(failures).map(([k, n]) => `${n} ${k}`).join(', ') || '0 failed';
    const ok = W.reduce((s, r) => s + r.ok, 0);
    console.log(`${v.name.padEnd(15)} ratio median ${fmt(m((r) => r.ratio), 2)} (rounds ${spread(W.map((r) => r.ratio))}); ${fmt(m((r) => r.cpuMs), 2)} ms vault CPU per recovery (rounds ${spread(W.map((r) => r.cpuMs))}) = ${fmt(m((r) => r.perCpu))} recoveries per vault core-second; ${ok} ok, ${failed}`);
    console.log(
      `${''.padEnd(15)} wall: ${fmt(m((r) => r.rate))} recoveries/s while timed, vault core ${fmt(m((r) => r.vaultBusy) * 100)}% busy (its event loop waited for the CPU ${fmt(m((r) => r.vaultWaited) * 100)}% of the time: other processes on its core)` +
        (m((r) => r.vaultBusy + r.vaultWaited) >= 0.9
          ? ''
          : m((r) => r.loadBusy) < 0.5
            ? ' — busy + waiting below 90% with the load core mostly idle: the vault waited for its own commits (WAL fsync, anchor write), not for the clients'
            : ' — busy + waiting below 90%: the load generator set the pace, not the vault'),
    );
    console.log(
      `${''.padEnd(15)} load generator: ${fmt(m((r) => r.loadMs), 2)} ms CPU per recovery while timed (load core ${fmt(m((r) => r.loadBusy) * 100)}% busy), ` +
        (MODE === 'phased' ? `${fmt(m((r) => r.loadUntimedMsPer), 2)} ms per recovery of client OPAQUE/HPKE work untimed between phases` : `${fmt(m((r) => r.preMsPerItem), 2)} ms wall per login-start precomputed before the window${W.some((r) => r.live) ? `, ${W.reduce((s, r) => s + r.live, 0)} recoveries precomputed live (pool ran out)` : ''}`),
    );
    if (MODE === 'phased') {
      const per = (k) => fmt(m((r) => (r.split[k] * 1000) / r.ok), 2);
      console.log(`${''.padEnd(15)} vault CPU per recovery by thread: event loop ${per('mainUser')} ms user + ${per('mainSys')} ms system; other threads (fsyncs, anchor, GC helpers) ${per('otherUser')} ms user + ${per('otherSys')} ms system`);
    }
    console.log(`${''.padEnd(15)} group commit: ${fmt(m((r) => r.batch), 1)} record changes per log entry, ${fmt(m((r) => r.entriesPerRecovery), 2)} log entries (store commit + anchor write) per recovery; ${fmt(m((r) => r.expiredPerRecovery), 3)} commit delays run out per recovery (batches held the whole 4 ms for a request still deciding)`);
  }
  console.log(
    'ratio = recoveries (both round trips over HTTP, HPKE, sealing, SQLite fsync, anchor) per second of vault CPU (one core) / ceiling (bare OPAQUE server ' +
      'startLogin+finishLogin per CPU-second, one process on the same core), per round; median over rounds. The share of its CPU the vault spends on the OPAQUE math.',
  );
  for (const v of vaults) if (targets[v.name]) console.log(`bench: ${v.name} ratio=${median(v.windows.map((r) => r.ratio)).toFixed(2)} target=${targets[v.name]}`);
  if (!vaults.some((v) => v.name === 'vault-pkcs11') && ONLY !== 'software') console.log('bench: vault-pkcs11 ratio=n/a target=0.5');
  // --variant-main: this build's CPU per recovery over the variant build's, per round (same round: same load).
  for (const v of vaults) {
    const other = vaults.find((o) => o.name === `${v.name} (variant build)`);
    if (!other) continue;
    const per = v.windows.map((r, i) => r.cpuMs / other.windows[i].cpuMs);
    console.log(`A/B ${v.name}: this build's CPU per recovery / the variant build's, per round: median ${median(per).toFixed(3)} (rounds ${per.map((x) => x.toFixed(3)).join(' ')})`);
  }
} finally {
  ceilingProc?.stop();
  for (const v of vaults) await closeVault(v);
  rmSync(work, { recursive: true, force: true });
}
