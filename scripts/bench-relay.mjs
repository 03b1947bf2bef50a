// `npm run bench:relay [-- --seconds N] [-- --workers N] [-- --lanes N] [-- --rounds N] [-- --no-blob | --blob-only]`
// Password recoveries (both OPAQUE round trips, HPKE, SQLite) through the front end
// (client → coffer-relay → coffer-vault) against the same recoveries sent straight to
// the vault, in one run, on one vault process, driven by the same load generator.
//
// The load generator runs in separate processes (scripts/bench-relay-worker.mjs, the
// approach of scripts/bench-vault-worker.mjs): a single in-process generator was the
// limit before (it printed ratio 1.51 — the relay "faster" than direct), so it measured
// itself, not the relay. The direct path signs the relay link MAC itself (as a relay
// would), so both paths cost the vault the same. Clients precompute what a client may
// prepare before talking to the vault and use INSECURE_FAST_KSF_FOR_TESTING (argon2id
// runs on the client, never on the vault or relay).
//
// Cores (2 on the reference machine): the vault is pinned to --vault-cpu (0); the load
// generators and the relay share --load-cpu (1) — the relay never takes the vault's
// core, as on separate machines, but competes with the clients. Phases alternate
// direct/relay --rounds times to even out drift. Ends with
// `bench: relay-recover ratio=X target=0.85` (X = relay recoveries/s / direct recoveries/s).
import { fork, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { benchBlob } from './bench-relay-blob.mjs';
import { argNumber } from './bench-args.mjs';

// Blob API backups (issue 13, scripts/bench-relay-blob.mjs): after the recoveries, unless
// `--no-blob`; `--blob-only` runs just them. `--blob-scale S` (data set scale, default
// 0.25), `--blob-rounds N` (default 2), `--blob-object-mib M` (the large upload, default 256).
const runBlob = async () => {
  const lines = await benchBlob({ root, scale: argNumber('blob-scale', 0.25), rounds: argNumber('blob-rounds', 2), objectMiB: argNumber('blob-object-mib', 256) });
  for (const l of lines) console.log(l);
};
if (process.argv.includes('--blob-only')) {
  await runBlob();
  process.exit(0);
}

// Account store of the relay: `--store sqlite|postgres`; by default the bench runs once
// with each (PostgreSQL: a throwaway cluster initdb'd in a temp dir, as the tests do)
// and reports both, SQLite's ratio on the `bench: relay-recover` line.
const storeArg = process.argv.indexOf('--store');
const STORE = storeArg >= 0 ? process.argv[storeArg + 1] : 'both';
if (STORE === 'both') {
  const passOn = process.argv.slice(2);
  const ratios = {};
  for (const store of ['sqlite', 'postgres']) {
    process.stderr.write(`bench:relay: account store ${store}\n`);
    const r = spawnSync(process.execPath, [process.argv[1], ...passOn, '--store', store], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
    process.stdout.write(r.stdout.split('\n').filter((l) => l && !l.startsWith('bench: relay-recover')).map((l) => `[${store}] ${l}\n`).join(''));
    const m = /bench: relay-recover ratio=([\d.]+)/.exec(r.stdout);
    if (r.status !== 0 || !m) {
      process.stderr.write(`bench:relay: the ${store} run failed (exit ${r.status})\n`);
      process.exit(1);
    }
    ratios[store] = m[1];
  }
  console.log(`bench: relay-recover-postgres ratio=${ratios.postgres} target=0.85`);
  console.log(`bench: relay-recover ratio=${ratios.sqlite} target=0.85`);
  if (!process.argv.includes('--no-blob')) await runBlob();
  process.exit(0);
}
if (STORE !== 'sqlite' && STORE !== 'postgres') {
  process.stderr.write('bench:relay: --store sqlite|postgres\n');
  process.exit(2);
}

const SECONDS = argNumber('seconds', 6);
const WORKERS = argNumber('workers', 2);
const LANES = argNumber('lanes', 8);
const ROUNDS = argNumber('rounds', 2);
const VAULT_CPU = argNumber('vault-cpu', 0);
const LOAD_CPU = argNumber('load-cpu', 1);
// Enough accounts per path that none reaches the vault's per-account login limit (64 per 5 minutes).
const ACCOUNTS = argNumber('accounts', 384);
const VAULT_MAIN = join(root, 'packages/vault/dist/src/server/main.js');
// COFFER_BENCH_RELAY_MAIN: another build of the relay (an A/B against a saved copy of dist/).
const RELAY_MAIN = process.env.COFFER_BENCH_RELAY_MAIN || join(root, 'packages/relay/dist/src/main.js');
// COFFER_BENCH_RELAY_MAIN_B: a second relay build beside the first, on the same vault and
// core, with its own accounts: each round runs direct, then both relays (in alternating
// order), so the two builds are compared phase by phase under the same load.
const RELAY_MAIN_B = process.env.COFFER_BENCH_RELAY_MAIN_B || null;
const WORKER = join(root, 'scripts', 'bench-relay-worker.mjs');
const PROTOCOL = join(root, 'packages', 'protocol', 'dist', 'src', 'index.js');
const NODE_CRYPTO = join(root, 'packages', 'vault', 'dist', 'src', 'server', 'node-crypto.js');
const TASKSET = existsSync('/usr/bin/taskset') ? '/usr/bin/taskset' : null;
const fmt = (x, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;

const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-relay-'));
const linkKeyHex = 'be'.repeat(32);
const linkKeyFile = join(dir, 'link.key');
writeFileSync(linkKeyFile, linkKeyHex + '\n', { mode: 0o600 });
const children = [];
let stopPostgres = async () => {};

// Profile the relay: COFFER_BENCH_RELAY_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'
function startService(main, env, cpu) {
  const extra = main === RELAY_MAIN || main === RELAY_MAIN_B ? (process.env.COFFER_BENCH_RELAY_NODE_ARGS?.split(' ').filter(Boolean) ?? []) : [];
  const node = [process.execPath, ...extra, main, 'serve'];
  const [cmd, args] = TASKSET ? [TASKSET, ['-c', String(cpu), ...node]] : [node[0], node.slice(1)];
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      err += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(err);
      if (m) resolve({ child, url: m[1] });
    });
    child.once('exit', (c) => reject(new Error(`${main} exited ${c}: ${err}`)));
  });
}

function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** CPU seconds of the process's main thread (the rest: V8's GC and compiler threads, libuv's pool). */
function mainThreadSeconds(pid) {
  return cpuSeconds(`${pid}/task/${pid}`);
}

function pin(pid, cpu) {
  if (!TASKSET) return;
  const r = spawnSync(TASKSET, ['-a', '-pc', String(cpu), String(pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset: ${r.stderr}`);
}

function startWorker() {
  const w = fork(WORKER, [], { env: { ...process.env, COFFER_BENCH_WORKER: JSON.stringify({ protocolPath: PROTOCOL, nodeCryptoPath: NODE_CRYPTO }) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.push(w);
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

try {
  const vaultEnv = { COFFER_VAULT_DATA_DIR: join(dir, 'vault'), COFFER_VAULT_PORT: '0', COFFER_VAULT_LOG_LEVEL: 'warn', COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_LOGINS_PER_WINDOW: '64', COFFER_VAULT_LINK_KEY_FILE: linkKeyFile };
  const vault = await startService(VAULT_MAIN, vaultEnv, VAULT_CPU);
  const bundle = spawnSync(process.execPath, [VAULT_MAIN, 'bundle'], { env: { ...process.env, ...vaultEnv }, encoding: 'utf8' });
  if (bundle.status !== 0) throw new Error(bundle.stderr);
  const big = { perSecond: 1e6, burst: 1e6 };
  const relayConfig = join(dir, 'relay.json');
  writeFileSync(relayConfig, JSON.stringify({ limits: { perAddress: big, perAccount: big, accountCreation: big, signInByAddress: big, signInByAccount: big, passwordSignInByAccount: big } }));
  // The relay logs at its production default (info: one line per request, to /dev/null here).
  let pgEnv = {};
  if (STORE === 'postgres') {
    const { startPostgres } = await import(join(root, 'packages', 'relay', 'dist', 'test', 'postgres.js'));
    const server = await startPostgres();
    stopPostgres = () => server.stop();
    pgEnv = { COFFER_RELAY_ACCOUNT_STORE: 'postgres', COFFER_RELAY_PG_URL: await server.database('bench') };
  }
  const relayEnv = (name) => ({ ...pgEnv, COFFER_RELAY_ADMIN: '0', COFFER_RELAY_CONFIG: relayConfig, COFFER_RELAY_DATA_DIR: join(dir, name), COFFER_RELAY_PORT: '0', COFFER_RELAY_LINK_KEY_FILE: linkKeyFile, COFFER_RELAY_VAULT_NODES: vault.url, COFFER_RELAY_LOG_LEVEL: 'info' });
  const relay = await startService(RELAY_MAIN, relayEnv('relay'), LOAD_CPU);
  // The second build shares the PostgreSQL database (its accounts are its own).
  const relayB = RELAY_MAIN_B ? await startService(RELAY_MAIN_B, relayEnv('relay-b'), LOAD_CPU) : null;

  process.stderr.write(`bench:relay: ${WORKERS} load-generator processes × ${LANES} lanes, ${ACCOUNTS} accounts per path; vault on CPU ${TASKSET ? VAULT_CPU : '-'}, relay and load generators on CPU ${TASKSET ? LOAD_CPU : '-'}${TASKSET ? '' : ' (taskset missing: nothing pinned)'}\n`);
  const workers = Array.from({ length: WORKERS }, startWorker);
  await Promise.all(workers.map((w) => w.ready));
  const perWorker = Math.ceil(ACCOUNTS / WORKERS);
  await Promise.all(workers.map((w, k) => w.call('setup', { worker: k, vaultUrl: vault.url, relayUrl: relay.url, ...(relayB ? { relayBUrl: relayB.url } : {}), linkKeyHex, bundle: bundle.stdout, lanes: LANES, accountsPerPath: perWorker })));
  for (const w of workers) pin(w.w.pid, LOAD_CPU);

  let expected = 400; // recoveries/s, refined after each phase
  async function phase(path, seconds = SECONDS) {
    // Precompute while the vault idles, for the whole window (a worker that runs out computes live, counted).
    await Promise.all(workers.map((w) => w.call('precompute', { path, perWorker: Math.ceil((expected * seconds * 1.2) / WORKERS) })));
    const relayPid = (path === 'relayB' ? relayB : relay).child.pid;
    const cpu0 = { vault: cpuSeconds(vault.child.pid), relay: cpuSeconds(relayPid), relayMain: mainThreadSeconds(relayPid) };
    const t0 = Date.now() + 200;
    const results = await Promise.all(workers.map((w) => w.call('run', { path, deadlineEpochMs: t0 + seconds * 1000 })));
    const wall = (Date.now() - t0) / 1000;
    const latencies = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
    const failures = {};
    for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v;
    const rate = latencies.length / wall;
    expected = Math.max(expected, rate);
    return {
      rate,
      n: latencies.length,
      failed: Object.values(failures).reduce((s, v) => s + v, 0),
      failures,
      live: results.reduce((s, r) => s + r.live, 0),
      p50: pct(latencies, 50),
      p99: pct(latencies, 99),
      vaultBusy: (cpuSeconds(vault.child.pid) - cpu0.vault) / wall,
      relayMs: ((cpuSeconds(relayPid) - cpu0.relay) * 1000) / latencies.length,
      relayMainMs: ((mainThreadSeconds(relayPid) - cpu0.relayMain) * 1000) / latencies.length,
      loadMs: results.reduce((s, r) => s + r.cpuMs, 0) / latencies.length,
    };
  }

  // Two untimed seconds per relay first when two builds are compared: neither's first
  // measured phase pays for its JIT warm-up.
  if (relayB) for (const p of ['relay', 'relayB']) await phase(p, 2);
  const results = { direct: [], relay: [], relayB: [] };
  for (let round = 0; round < ROUNDS; round++) {
    results.direct.push(await phase('direct'));
    const order = relayB && round % 2 === 1 ? ['relayB', 'relay'] : relayB ? ['relay', 'relayB'] : ['relay'];
    for (const p of order) results[p].push(await phase(p));
  }
  for (const w of workers) w.w.send({ type: 'exit' });
  const sum = (rs) => ({
    rate: rs.reduce((s, r) => s + r.rate, 0) / rs.length,
    n: rs.reduce((s, r) => s + r.n, 0),
    failed: rs.reduce((s, r) => s + r.failed, 0),
    failures: rs.map((r) => JSON.stringify(r.failures)).filter((f) => f !== '{}').join(' '),
    live: rs.reduce((s, r) => s + r.live, 0),
    p50: Math.max(...rs.map((r) => r.p50)),
    p99: Math.max(...rs.map((r) => r.p99)),
    vaultBusy: rs.reduce((s, r) => s + r.vaultBusy, 0) / rs.length,
    relayMs: rs.reduce((s, r) => s + r.relayMs, 0) / rs.length,
    relayMainMs: rs.reduce((s, r) => s + r.relayMainMs, 0) / rs.length,
    loadMs: rs.reduce((s, r) => s + r.loadMs, 0) / rs.length,
  });
  const d = sum(results.direct);
  const r = sum(results.relay);
  const line = (name, x, relayCpu) =>
    `${name}: ${fmt(x.rate, 1)} recoveries/s  (n=${x.n}, failed=${x.failed}${x.failures ? ` ${x.failures}` : ''}, p50 ${fmt(x.p50, 1)} ms, p99 ${fmt(x.p99, 1)} ms; vault core ${fmt(x.vaultBusy * 100)}% busy; ` +
    `load generator ${fmt(x.loadMs, 2)} ms CPU/recovery${relayCpu ? `; relay ${fmt(x.relayMs, 2)} ms CPU/recovery (main thread ${fmt(x.relayMainMs, 2)})` : ''}${x.live ? `; ${x.live} precomputed live` : ''})`;
  console.log(line('direct to vault', d, false));
  console.log(line('through relay  ', r, true));
  console.log(`per round (direct/relay recoveries/s): ${results.direct.map((x, i) => `${fmt(x.rate)}/${fmt(results.relay[i].rate)}`).join(', ')}`);
  console.log(`per round relay ms CPU/recovery: ${results.relay.map((x) => fmt(x.relayMs, 3)).join(', ')}`);
  if (relayB) {
    const b = sum(results.relayB);
    console.log(line('through relay B', b, true));
    console.log(`relay A = ${RELAY_MAIN}, relay B = ${RELAY_MAIN_B}`);
    console.log(`per round B/A recoveries/s: ${results.relay.map((x, i) => (results.relayB[i].rate / x.rate).toFixed(3)).join(', ')}`);
    console.log(`per round B/A relay CPU/recovery: ${results.relay.map((x, i) => (results.relayB[i].relayMs / x.relayMs).toFixed(3)).join(', ')}`);
    console.log(`bench: relay-recover-b ratio=${(b.rate / d.rate).toFixed(2)} (relay B recoveries/s / direct)`);
  }
  console.log(`(${SECONDS} s × ${ROUNDS} rounds per path; one vault process; the relay shares the load generators' core, not the vault's)`);
  console.log(`bench: relay-recover ratio=${(r.rate / d.rate).toFixed(2)} target=0.85`);
} finally {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  await new Promise((res) => setTimeout(res, 300));
  await stopPostgres().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}
