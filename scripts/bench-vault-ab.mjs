// `node scripts/bench-vault-ab.mjs [OTHER_ROOT…] [--rounds N] [--accounts N] [--lanes N] [--platform software|pkcs11] [--count-pkcs11] [--profile DIR] [--heap-profile DIR] [--http PORT] [--host ADDR] [--log-levels L1,L2,…] [--profile-interval US]` (after `npx tsc -b`)
// Vault CPU per recovery of this build and of other builds (each OTHER_ROOT a built copy
// of the repository, e.g. a `git worktree` of main), in ONE process, rounds interleaved.
//
// Why: on a shared machine `npm run bench:vault`'s figures move by ±30% from run to run
// (its vault core waits for the CPU most of the window), far more than one change saves.
// Here each build's vault runs in this process (its own module graph: its protocol
// package, crypto provider and OPAQUE instance) and is driven through `app.inject`
// (Fastify routing, parsing, logging at info to /dev/null; no sockets). A round sends
// every account's login-start, 32 at a time, then every login-finish; the client work
// (OPAQUE, sealing, opening) is done between the timed windows, so process CPU inside a
// window (all threads: SQLite and anchor fsyncs included) is the vault's alone. Rounds
// of the builds alternate, so load from other processes falls on all of them alike;
// the minimum and median over rounds are printed (after one uncounted warm-up round each),
// and per other build the per-round ratio's median and geometric mean with a ~95% interval.
// --platform pkcs11: each build on its own SoftHSM2 token (one token directory, one
// SOFTHSM2_CONF for the process; the library is initialized once and shared), keys made
// by that build's `coffer-vault keys create`.
// --count-pkcs11 (with --platform pkcs11): the PKCS#11 calls each build's event loop makes
// per recovery in the timed windows, by function (every C_* method of that build's
// pkcs11js counted; the anchor thread's own calls are not, its writes are the log entries),
// and the process CPU (process.cpuUsage, all threads) spent inside each call, µs per call:
// SoftHSM2's own cost in the vault, next to bench-vault-hsm-ops' figures on a quiet token.
// --heap-profile DIR: a sampling heap profile (node:inspector, every 4 KiB allocated on
// average) of this build's timed windows only, one .heapprofile per window (open it in
// Chrome DevTools' Memory tab): which code allocates, the source of the GC's work.
// --http PORT: each build listens on --host (default 127.0.0.1) (PORT, PORT+1, …) and is sent real HTTP
// requests over kept-alive sockets instead of `app.inject` (node:http's parser and socket
// writes included). The client side of that HTTP runs in this process too and is the same
// for every build: compare the builds' difference, not the absolute figure.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { Agent, request } from 'node:http';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { PerformanceObserver } from 'node:perf_hooks';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { recoverAll, registerAll } from './vault-load.mjs';
import { argNumber, argString, positionalArgs } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 5);
const ACCOUNTS = argNumber('accounts', 256);
const LANES = argNumber('lanes', 32);
// --profile DIR: a CPU profile (node:inspector) of this build's timed windows only (no client work), one file per window.
const profileAt = process.argv.indexOf('--profile');
const PROFILE_DIR = profileAt >= 0 ? process.argv[profileAt + 1] : null;
const heapAt = process.argv.indexOf('--heap-profile');
const HEAP_DIR = heapAt >= 0 ? process.argv[heapAt + 1] : null;
const platformAt = process.argv.indexOf('--platform');
const PLATFORM = platformAt >= 0 ? process.argv[platformAt + 1] : 'software';
const HTTP_PORT = argNumber('http', 0);
const HTTP_HOST = argString('host', '127.0.0.1');
const COUNT_PKCS11 = process.argv.includes('--count-pkcs11');
// --log-levels info,warn: each build's vault log level in order (default info: one line per
// request); the same root given twice with two levels is what the per-request line costs.
const LOG_LEVELS = argString('log-levels', 'info').split(',');
if (PLATFORM !== 'software' && PLATFORM !== 'pkcs11') throw new Error(`--platform: software or pkcs11, not ${PLATFORM}`);
const roots = [root, ...positionalArgs(['count-pkcs11'])];

// GC pauses on the event loop (PerformanceObserver 'gc'), summed per timed window and printed
// per recovery. The clients share this heap: garbage they leave between windows is
// collected in them too, so this is more than the vault's own (in bench:vault's separate
// vault process, COFFER_BENCH_VAULT_NODE_ARGS=--trace-gc-nvp gives that).
// COFFER_BENCH_AB_GC_KINDS=1 also prints the pauses by kind.
let gcMs = 0;
const gcByKind = new Map();
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    if (counting) gcByKind.set(e.detail?.kind, (gcByKind.get(e.detail?.kind) ?? 0) + e.duration);
  }
}).observe({ entryTypes: ['gc'] });

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** SoftHSM2: one token directory and configuration for this process; a token per build. */
let hsmDir = null;
function softhsmEnv(buildRoot, dir, n) {
  const util = process.env.COFFER_SOFTHSM_UTIL ?? '/usr/bin/softhsm2-util';
  const module = process.env.COFFER_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';
  if (!existsSync(util) || !existsSync(module)) throw new Error('--platform pkcs11: SoftHSM2 is not installed');
  if (!hsmDir) {
    hsmDir = mkdtempSync(join(tmpdir(), 'coffer-bench-vault-ab-hsm-'));
    mkdirSync(join(hsmDir, 'tokens'));
    writeFileSync(join(hsmDir, 'softhsm2.conf'), `directories.tokendir = ${join(hsmDir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
    process.env.SOFTHSM2_CONF = join(hsmDir, 'softhsm2.conf'); // read by the library when first initialized
  }
  const label = `coffer-ab-${n}`;
  const init = spawnSync(util, ['--init-token', '--free', '--label', label, '--pin', '1234', '--so-pin', '123456'], { env: process.env, encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`softhsm2-util: ${init.stderr}`);
  const env = { COFFER_VAULT_PLATFORM: 'pkcs11', COFFER_VAULT_PKCS11_MODULE: module, COFFER_VAULT_PKCS11_TOKEN_LABEL: label, COFFER_VAULT_PKCS11_PIN: '1234', COFFER_VAULT_DATA_DIR: dir };
  const made = spawnSync(process.execPath, [join(buildRoot, 'packages/vault/dist/src/server/main.js'), 'keys', 'create'], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`${buildRoot}: keys create: ${made.stderr}`);
  return env;
}

/** Counts every C_* call of this build's pkcs11js (its own copy of the module) into `counts`, and the CPU µs inside the calls into `counts.cpu`. */
function countPkcs11Calls(buildRoot) {
  const counts = new Map();
  counts.cpu = new Map();
  const { PKCS11 } = createRequire(join(buildRoot, 'packages/vault/package.json'))('pkcs11js');
  // The native class's methods: each instance wraps them at construction, and the
  // JavaScript subclass's overrides call them through `super`.
  const native = Object.getPrototypeOf(PKCS11.prototype);
  for (const name of Object.getOwnPropertyNames(native)) {
    const fn = native[name];
    if (!name.startsWith('C_') || typeof fn !== 'function') continue;
    native[name] = function (...args) {
      counts.set(name, (counts.get(name) ?? 0) + 1);
      const c0 = process.cpuUsage();
      try {
        return fn.apply(this, args);
      } finally {
        const c = process.cpuUsage(c0);
        counts.cpu.set(name, (counts.cpu.get(name) ?? 0) + c.user + c.system);
      }
    };
  }
  return counts;
}

async function open({ buildRoot, dir, platformEnv }) {
  const pkcs11Calls = COUNT_PKCS11 && PLATFORM === 'pkcs11' ? countPkcs11Calls(buildRoot) : null;
  const { loadConfig } = await import(join(buildRoot, 'packages/vault/dist/src/server/config.js'));
  const { assembleVault } = await import(join(buildRoot, 'packages/vault/dist/src/server/start.js'));
  const P = await import(join(buildRoot, 'packages/protocol/dist/src/index.js'));
  await P.opaque.ready;
  const config = loadConfig({ env: { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1', COFFER_VAULT_LOGINS_PER_WINDOW: '64', ...platformEnv } });
  const vault = await assembleVault(config, { createIfMissing: true, logger: { level: LOG_LEVELS[builds.length] ?? 'info', stream: createWriteStream('/dev/null') }, warn: () => {} });
  let send;
  if (HTTP_PORT) {
    const port = HTTP_PORT + builds.length;
    await vault.app.listen({ host: HTTP_HOST, port });
    const agent = new Agent({ keepAlive: true, maxSockets: LANES });
    send = (account, body) =>
      new Promise((resolve, reject) => {
        const req = request({ host: HTTP_HOST, port, path: '/v1/request', method: 'POST', agent, headers: { 'content-type': 'application/octet-stream', 'content-length': body.length, 'coffer-account': account } }, (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => (res.statusCode === 200 ? resolve(new Uint8Array(Buffer.concat(chunks))) : reject(new Error(`${buildRoot}: HTTP ${res.statusCode} ${Buffer.concat(chunks)}`))));
        });
        req.on('error', reject);
        req.end(Buffer.from(body));
      });
  } else send = (account, body) =>
    vault.app.inject({ method: 'POST', url: '/v1/request', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account }, payload: Buffer.from(body) }).then((r) => {
      if (r.statusCode !== 200) throw new Error(`${buildRoot}: HTTP ${r.statusCode} ${r.body}`);
      return new Uint8Array(r.rawPayload);
    });
  const fleetKey = vault.fleet.fleetKey;
  const accounts = Array.from({ length: ACCOUNTS }, (_, i) => `bench-${i}`);
  await registerAll(P, fleetKey, accounts, send);
  return { buildRoot, dir, vault, P, send, fleetKey, accounts, rounds: [], pkcs11Calls, pkcs11Timed: new Map(), pkcs11TimedCpu: new Map() };
}

/** A counter of the build's registry so far (NaN when that build has no such metric). */
async function counter(b, name) {
  const m = (await b.vault.metrics.registry.getSingleMetric(name)?.get())?.values?.[0]?.value;
  return typeof m === 'number' ? m : NaN;
}
/** Log entries committed so far (each: a store transaction + WAL fsync, an anchor write). */
const logEntries = (b) => counter(b, 'coffer_vault_log_entries_total');
/** Batches that waited the whole commit delay (the vault idle, waiting on its own timer). */
const delayExpired = (b) => counter(b, 'coffer_vault_commit_delay_expired_total');

async function round(b) {
  const { P, fleetKey, send } = b;
  const entries0 = await logEntries(b);
  const expired0 = await delayExpired(b);
  const ms = {};
  const gcIn = {};
  await recoverAll(P, fleetKey, b.accounts, LANES, send, async (phase, run) => {
    await profiling(b, true);
    const calls0 = b.pkcs11Calls ? new Map(b.pkcs11Calls) : null;
    const cpu0 = b.pkcs11Calls ? new Map(b.pkcs11Calls.cpu) : null;
    const c = cpuMs();
    const g = gcMs;
    const r = await run();
    ms[phase] = cpuMs() - c;
    gcIn[phase] = gcMs - g;
    if (calls0 && counting) {
      for (const [k, n] of b.pkcs11Calls) b.pkcs11Timed.set(k, (b.pkcs11Timed.get(k) ?? 0) + n - (calls0.get(k) ?? 0));
      for (const [k, us] of b.pkcs11Calls.cpu) b.pkcs11TimedCpu.set(k, (b.pkcs11TimedCpu.get(k) ?? 0) + us - (cpu0.get(k) ?? 0));
    }
    await profiling(b, false, phase);
    return r;
  });
  b.rounds.push({ gc: (gcIn.start + gcIn.finish) / b.accounts.length, start: ms.start / b.accounts.length, finish: ms.finish / b.accounts.length, entries: ((await logEntries(b)) - entries0) / b.accounts.length, expired: ((await delayExpired(b)) - expired0) / b.accounts.length });
}

let session = null;
let profiles = 0;
/** Starts or stops the CPU profiler (or the sampling heap profiler) around one of this build's (the first root's) timed windows. */
async function profiling(b, start, name) {
  const dir = PROFILE_DIR ?? HEAP_DIR;
  if (!dir || b !== builds[0] || !counting) return;
  if (!session) {
    session = new Session();
    session.connect();
    mkdirSync(dir, { recursive: true });
    await post(PROFILE_DIR ? 'Profiler.enable' : 'HeapProfiler.enable');
    // --profile-interval US: the CPU profiler's sampling interval (V8's default, 1000 µs,
    // gives ~1 sample per recovery: too few to split the vault's ~0.6 ms outside OPAQUE).
    if (PROFILE_DIR) await post('Profiler.setSamplingInterval', { interval: argNumber('profile-interval', 1000) });
  }
  if (!PROFILE_DIR) {
    if (start) return post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    const { profile } = await post('HeapProfiler.stopSampling');
    writeFileSync(join(dir, `${name}-${++profiles}.heapprofile`), JSON.stringify(profile));
    return;
  }
  if (start) return post('Profiler.start');
  const { profile } = await post('Profiler.stop');
  writeFileSync(join(dir, `${name}-${++profiles}.cpuprofile`), JSON.stringify(profile));
}
const post = (method, params) => new Promise((resolve, reject) => session.post(method, params, (err, r) => (err ? reject(err) : resolve(r))));
let counting = false;

const builds = [];
let prepared = [];
try {
  // Every token exists before the first build initializes the library (its slot list is fixed then).
  prepared = roots.map((buildRoot, n) => {
    const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-vault-ab-'));
    return { buildRoot, dir, platformEnv: PLATFORM === 'pkcs11' ? softhsmEnv(buildRoot, dir, n) : {} };
  });
  for (const p of prepared) builds.push(await open(p)); // open() reads builds.length for its port
  for (const b of builds) {
    await round(b); // warm-up (JIT, caches): not counted
    b.rounds.length = 0;
  }
  counting = true;
  for (let i = 0; i < ROUNDS; i++) for (const b of builds) await round(b);
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const fmt = (x) => x.toFixed(2);
  console.log(`vault CPU per recovery (login-start + login-finish via ${HTTP_PORT ? `HTTP on ${HTTP_HOST}, client in this process` : 'app.inject'}, ${PLATFORM} platform, ${LANES} concurrent, ${ACCOUNTS} accounts, ${ROUNDS} interleaved rounds; ms):`);
  for (const b of builds) {
    const total = b.rounds.map((r) => r.start + r.finish);
    console.log(`  ${b.buildRoot}: min ${fmt(Math.min(...total))}  median ${fmt(median(total))}  (login-start ${fmt(median(b.rounds.map((r) => r.start)))}, login-finish ${fmt(median(b.rounds.map((r) => r.finish)))}; log entries per recovery ${fmt(median(b.rounds.map((r) => r.entries)))}, commit delays run out per recovery ${fmt(median(b.rounds.map((r) => r.expired)))}; GC pauses ${(1000 * median(b.rounds.map((r) => r.gc))).toFixed(0)} µs per recovery)  rounds ${total.map(fmt).join(' ')}`);
  }
  if (process.env.COFFER_BENCH_AB_GC_KINDS) console.log(`  GC pauses by kind over all timed windows (1 minor, 2 major, 4 incremental, 8 weak callbacks; ms): ${[...gcByKind].map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
  for (const b of builds.filter((x) => x.pkcs11Calls)) {
    const recoveries = ROUNDS * b.accounts.length;
    const list = [...b.pkcs11Timed].filter(([, n]) => n > 0).sort((x, y) => y[1] - x[1]);
    const total = list.reduce((x, [, n]) => x + n, 0);
    console.log(`  ${b.buildRoot}: PKCS#11 calls per recovery on the event loop ${(total / recoveries).toFixed(2)}: ${list.map(([k, n]) => `${k} ${(n / recoveries).toFixed(2)}`).join(', ')}`);
    const cpu = list.reduce((x, [k]) => x + (b.pkcs11TimedCpu.get(k) ?? 0), 0);
    console.log(`  ${b.buildRoot}: CPU inside those calls ${(cpu / recoveries).toFixed(0)} µs per recovery; µs per call: ${list.map(([k, n]) => `${k} ${((b.pkcs11TimedCpu.get(k) ?? 0) / n).toFixed(1)}`).join(', ')}`);
  }
  for (const b of builds.slice(1)) {
    const per = builds[0].rounds.map((r, i) => (r.start + r.finish) / (b.rounds[i].start + b.rounds[i].finish));
    // Geometric mean of the per-round ratios with a ~95% interval (mean of logs ± 2 standard
    // errors): on the loaded shared machine a round's ratio moves ±20–30%, so a change of a
    // few percent is real only when the interval excludes 1 (more rounds narrow it).
    const logs = per.map(Math.log);
    const mean = logs.reduce((x, y) => x + y, 0) / logs.length;
    const se = logs.length > 1 ? Math.sqrt(logs.reduce((x, y) => x + (y - mean) ** 2, 0) / (logs.length - 1) / logs.length) : NaN;
    console.log(
      `  ${builds[0].buildRoot} / ${b.buildRoot}, per round: median ${median(per).toFixed(3)}, geometric mean ${Math.exp(mean).toFixed(3)} (95% ${Math.exp(mean - 2 * se).toFixed(3)}–${Math.exp(mean + 2 * se).toFixed(3)}) (rounds ${per.map((x) => x.toFixed(3)).join(' ')})`,
    );
  }
} finally {
  for (const b of builds) await b.vault.close();
  for (const p of prepared) rmSync(p.dir, { recursive: true, force: true });
  if (hsmDir) rmSync(hsmDir, { recursive: true, force: true });
}
