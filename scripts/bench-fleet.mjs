/* global fetch, AbortSignal */
// `npm run bench:fleet [-- --seconds N] [-- --rounds N] [-- --lanes N] [-- --platform software|pkcs11] [-- --log-batch-max N] [-- --port-base N] [-- --no-kill]`
// Recoveries/s and latency on the three-data-centre fleet (3 etcd members + 3 vault
// nodes on 127.0.0.1-3, etcd store) against one coffer-vault on SQLite, in the same run,
// with the same in-process load generator (VaultClient, INSECURE_FAST_KSF_FOR_TESTING,
// both round trips over HTTP). Then a fleet run with one data centre (the etcd leader's)
// killed -9 halfway, printing recoveries per second across the kill.
//
// --platform pkcs11: every vault node (the single node and each of the three DCs) keeps
// its keys on its own SoftHSM2 token; the fleet's tokens share the fleet keys through
// the PKCS#11 key ceremony (C_WrapKey/C_UnwrapKey). Default: the software platform.
//
// Everything shares this machine's cores: the fleet runs 6 server processes where the
// single node runs 1, plus the load generator, so the fleet pays for its replication
// (3 fsyncs per write, raft messages, 3x the JSON/HTTP hops) on the same CPUs.
//
// --rounds N (default 3): the single node and the fleet run N alternating phases of
// --seconds each (single, fleet, single, fleet, …), both kept up, the one not measured
// stopped with SIGSTOP (so it costs no CPU) and resumed with SIGCONT before its next phase
// (each phase registers its own accounts first, which absorbs a leader change the pause may
// cause). The ratios pool every phase: a machine whose speed drifts during the run
// disturbs both sides alike. Per-round ratios are printed too.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { root } from './ensure-setup.mjs';
import { argNumber } from './bench-args.mjs';

const platformArg = process.argv.indexOf('--platform');
const PLATFORM = platformArg >= 0 ? process.argv[platformArg + 1] : 'software';
if (PLATFORM !== 'software' && PLATFORM !== 'pkcs11') throw new Error(`--platform must be software or pkcs11, got ${PLATFORM}`);
const SECONDS = argNumber('seconds', 8);
// --no-kill: skip the run with a data centre killed (quicker A/B of throughput and latency).
const KILL = !process.argv.includes('--no-kill');
// --log-batch-max N: at most N requests per rollback-protection log entry (1: what batching buys).
const BATCH_MAX = argNumber('log-batch-max', 0);
const LANES = argNumber('lanes', 12);
const ROUNDS = Math.max(1, argNumber('rounds', 3));
// --port-base N (or COFFER_BENCH_PORT_BASE): etcd client N, peer N+1, vault N+2 (+3 admin) on 127.0.0.1-3.
const PORT_BASE = argNumber('port-base', Number(process.env.COFFER_BENCH_PORT_BASE ?? 24890));
const ACCOUNTS_PER_LANE = 8;
// COFFER_BENCH_VAULT_DIST=dist-A: run a copy of the vault's build kept next to dist/ (A/B of two builds in one session).
const dist = (p) => join(root, 'packages', 'vault', process.env.COFFER_BENCH_VAULT_DIST ?? 'dist', p);
const { startCluster, SOFTHSM_MODULE } = await import(dist('src/server/cluster-support.js'));
const { startChildVault, bundleKey, runVaultCli } = await import(dist('test/helpers/child-vault.js'));
const { VaultClient, INSECURE_FAST_KSF_FOR_TESTING } = await import(join(root, 'packages', 'protocol', 'dist', 'src', 'index.js'));
const K = new Uint8Array(32).fill(1);
const pct = (s, p) => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
const fmt = (x, d = 1) => x.toFixed(d);
// CPU seconds (user + system) a process has used, from /proc (Linux); null elsewhere.
// CPU per recovery is the figure a shared machine disturbs least: the others' load
// stretches wall time, not the work each recovery costs.
const TICK = (() => {
  try {
    return 1 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  } catch {
    return 0.01;
  }
})();
function cpuSeconds(pids) {
  let sum = 0;
  for (const pid of pids) {
    if (!pid) continue;
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      sum += (Number(f[11]) + Number(f[12])) * TICK;
    } catch {
      return null;
    }
  }
  return sum;
}

// Like the relay's forwarder: the node that answered last is tried first (with rollback
// protection only the group's leader answers; the others say 503 not-leader at once).
let preferred = null;
function client(fleetKey, urls, account, prefer) {
  let i = preferred ?? prefer;
  return new VaultClient({
    fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      // A front end's retry: next node on a network error or a 503.
      // Up to ~30 s: a fleet just started may still be electing its first leader.
      for (let attempt = 0; attempt < 1500; attempt++) {
        const url = urls[i % urls.length];
        try {
          const res = await fetch(`${url}/v1/request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account }, body: bytes, signal: AbortSignal.timeout(10_000) });
          if (res.status === 200) {
            preferred = i % urls.length;
            return new Uint8Array(await res.arrayBuffer());
          }
          if (res.status !== 503) throw new Error(`HTTP ${res.status} ${await res.text()}`);
          if (/"not-leader"/.test(await res.text())) {
            i++;
            continue; // another node leads: no back-off
          }
        } catch (err) {
          if (String(err.message).startsWith('HTTP')) throw err;
        }
        i++;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error('no vault answered');
    },
  });
}

/** Pools several phases' results: recoveries over total wall time, percentiles over all latencies. */
function pool(runs) {
  const lat = runs.flatMap((r) => r.lat).sort((a, b) => a - b);
  const wall = runs.reduce((a, r) => a + r.wall, 0);
  const sum = (f) => runs.reduce((a, r) => a + f(r), 0);
  const n = lat.length;
  const cpuMs = runs.some((r) => r.cpuMs === null) ? null : sum((r) => r.cpuMs * r.n) / Math.max(1, n);
  const each = runs[0].each.map((_, i) => sum((r) => (r.each[i] ?? 0) * r.n) / Math.max(1, n));
  return { rps: n / wall, p50: pct(lat, 50), p99: pct(lat, 99), n, failures: sum((r) => r.failures), cpuMs, clientMs: sum((r) => r.clientMs * r.n) / Math.max(1, n), each };
}
function signal(pids, sig) {
  for (const pid of pids) if (pid) try { process.kill(pid, sig); } catch { /* gone */ }
}

async function load(fleetKey, urls, label, seconds, onSecond, pids = () => [], onStart = async () => undefined) {
  const accounts = Array.from({ length: LANES }, (_, l) => Array.from({ length: ACCOUNTS_PER_LANE }, (_, a) => `${label}-${l}-${a}`));
  await Promise.all(accounts.map(async (lane, l) => {
    for (const a of lane) {
      const r = await client(fleetKey, urls, a, l).register('pw', K);
      if (r.outcome !== 'ok') throw new Error(`register ${a}: ${r.outcome}`);
    }
  }));
  await onStart();
  const lat = [];
  const perSecond = [];
  const cpu0 = cpuSeconds(pids());
  const each0 = pids().map((p) => cpuSeconds([p]));
  const self0 = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  let failures = 0;
  await Promise.all(accounts.map(async (lane, l) => {
    for (let n = 0; performance.now() < end; n++) {
      const t = performance.now();
      const r = await client(fleetKey, urls, lane[n % lane.length], l).recover('pw');
      const done = performance.now();
      if (r.outcome !== 'ok') { failures++; continue; }
      lat.push(done - t);
      const s = Math.floor((done - start) / 1000);
      perSecond[s] = (perSecond[s] ?? 0) + 1;
      onSecond?.(s);
    }
  }));
  const wall = (performance.now() - start) / 1000;
  const cpu1 = cpuSeconds(pids());
  const each = pids().map((p, i) => ((cpuSeconds([p]) ?? 0) - (each0[i] ?? 0)) * 1000 / Math.max(1, lat.length));
  const self = process.cpuUsage(self0);
  lat.sort((a, b) => a - b);
  // ms of CPU per recovery: the servers (vault nodes, etcd members), and this load generator.
  const cpuMs = cpu0 === null || cpu1 === null ? null : ((cpu1 - cpu0) * 1000) / Math.max(1, lat.length);
  const clientMs = (self.user + self.system) / 1000 / Math.max(1, lat.length);
  return { rps: lat.length / wall, p50: pct(lat, 50), p99: pct(lat, 99), n: lat.length, failures, perSecond, cpuMs, clientMs, each, lat, wall };
}

const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-fleet-'));
let single, cluster;
try {
  // 1. single node, SQLite (on its own SoftHSM2 token with --platform pkcs11)
  const singleEnv = { COFFER_VAULT_DATA_DIR: join(dir, 'single') };
  if (PLATFORM === 'pkcs11') {
    const hsm = join(dir, 'single-softhsm');
    mkdirSync(join(hsm, 'tokens'), { recursive: true });
    writeFileSync(join(hsm, 'softhsm2.conf'), `directories.tokendir = ${join(hsm, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
    Object.assign(singleEnv, { SOFTHSM2_CONF: join(hsm, 'softhsm2.conf'), COFFER_VAULT_PLATFORM: 'pkcs11', COFFER_VAULT_PKCS11_MODULE: SOFTHSM_MODULE, COFFER_VAULT_PKCS11_TOKEN_LABEL: 'coffer-single', COFFER_VAULT_PKCS11_PIN: '1234' });
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'coffer-single', '--pin', '1234', '--so-pin', '123456'], { env: { ...process.env, ...singleEnv }, stdio: 'ignore' });
    const made = runVaultCli(['keys', 'create'], singleEnv);
    if (made.status !== 0) throw new Error(`keys create on the single node's token: ${made.stderr}`);
  }
  single = await startChildVault({ ...singleEnv, COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_LOGINS_PER_WINDOW: '64', COFFER_VAULT_LOG_LEVEL: 'warn' });
  const singleKey = await bundleKey(singleEnv);
  const singlePid = single.child.pid;

  // 2. three data centres (kept up alongside; each side is stopped while the other is measured)
  cluster = await startCluster({ dir: join(dir, 'fleet'), insecureFastKsf: true, platform: PLATFORM, ports: { etcdClient: PORT_BASE, etcdPeer: PORT_BASE + 1, vault: PORT_BASE + 2 }, vaultEnv: { COFFER_VAULT_LOGINS_PER_WINDOW: '64', ...(BATCH_MAX > 0 ? { COFFER_VAULT_LOG_BATCH_MAX: String(BATCH_MAX) } : {}) } });
  const urls = cluster.dcs.map((d) => d.vaultUrl);
  const fleetPids = () => cluster.dcs.flatMap((d) => [d.etcdPid(), d.vaultPid()]);
  // --cpu-detail: also the gRPC calls the etcd members handled (the JSON gateway's included), per recovery.
  const etcdCalls = async () => {
    const by = new Map();
    for (const d of cluster.dcs) {
      const text = await (await fetch(`${d.etcdUrl}/metrics`)).text();
      for (const m of text.matchAll(/^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\d+)/gm)) by.set(m[1], (by.get(m[1]) ?? 0) + Number(m[2]));
    }
    return by;
  };
  const detail = process.argv.includes('--cpu-detail');
  const singles = [];
  const fleets = [];
  const callTotals = new Map();
  for (let round = 0; round < ROUNDS; round++) {
    signal(fleetPids(), 'SIGSTOP');
    signal([singlePid], 'SIGCONT');
    singles.push(await load(singleKey, [single.url], `single${round}`, SECONDS, undefined, () => [singlePid]));
    signal([singlePid], 'SIGSTOP');
    signal(fleetPids(), 'SIGCONT');
    let calls0 = null;
    fleets.push(await load(cluster.fleetKey, urls, `fleet${round}`, SECONDS, undefined, fleetPids, async () => {
      if (detail) calls0 = await etcdCalls();
    }));
    if (detail) for (const [k, v] of await etcdCalls()) callTotals.set(k, (callTotals.get(k) ?? 0) + v - (calls0.get(k) ?? 0));
    const a = singles[round];
    const b = fleets[round];
    console.log(`  round ${round + 1}/${ROUNDS}: single ${fmt(a.rps)}/s p99 ${fmt(a.p99)} ms, fleet ${fmt(b.rps)}/s p99 ${fmt(b.p99)} ms: throughput ${fmt(b.rps / a.rps, 2)}, p99 ${fmt(b.p99 / a.p99, 2)}`);
  }
  signal([singlePid], 'SIGCONT');
  await single.stop();
  single = null;
  const s = pool(singles);
  const f = pool(fleets);
  console.log(`platform: ${PLATFORM}`);
  const cpuText = (r) => `, CPU/recovery ${r.cpuMs === null ? '?' : fmt(r.cpuMs, 2)} ms servers + ${fmt(r.clientMs, 2)} ms load generator`;
  console.log(`single node (SQLite): ${fmt(s.rps)} recoveries/s, p50 ${fmt(s.p50)} ms, p99 ${fmt(s.p99)} ms (${s.n} recoveries, ${LANES} lanes, ${ROUNDS} × ${SECONDS} s)${cpuText(s)}`);
  console.log(`fleet (3 DCs, etcd, rollback protection on: majority commit${BATCH_MAX > 0 ? `, at most ${BATCH_MAX} request(s) per log entry` : ', batched'}${PLATFORM === 'pkcs11' ? ', 3 SoftHSM2 tokens' : ''}):  ${fmt(f.rps)} recoveries/s, p50 ${fmt(f.p50)} ms, p99 ${fmt(f.p99)} ms (${f.n} recoveries, ${LANES} lanes over 3 nodes, ${ROUNDS} × ${SECONDS} s)${cpuText(f)}`);
  if (detail) {
    console.log(`  CPU ms/recovery per process: ${cluster.dcs.map((d, i) => `${d.name} etcd ${fmt(f.each[2 * i], 2)} vault ${fmt(f.each[2 * i + 1], 2)}`).join(', ')}`);
    console.log(`  etcd calls/recovery (registrations excluded): ${[...callTotals].map(([k, v]) => [k, v / f.n]).filter(([, v]) => v > 0.005).map(([k, v]) => `${k} ${fmt(v, 2)}`).join(', ')}`);
  }

  // 3. one DC killed halfway
  const leader = KILL ? ((await cluster.leader()) ?? 0) : 0;
  if (KILL) {
    let killed = false;
    const k = await load(cluster.fleetKey, urls, 'kill', SECONDS, (sec) => {
      if (!killed && sec >= SECONDS / 2) {
        killed = true;
        void cluster.dcs[leader].kill();
      }
    });
    console.log(`fleet with ${cluster.dcs[leader].name} (the etcd leader's DC) killed -9 at ~${SECONDS / 2}s: ${fmt(k.rps)} recoveries/s overall, p99 ${fmt(k.p99)} ms, ${k.failures} flows not ok`);
    console.log(`  per second: ${Array.from({ length: SECONDS + 1 }, (_, i) => `${i}s:${k.perSecond[i] ?? 0}`).join(' ')}`);
  }
  console.log(`bench: fleet-throughput ratio=${(f.rps / s.rps).toFixed(2)} target=0.5`);
  console.log(`bench: fleet-p99 ratio=${(f.p99 / s.p99).toFixed(2)} target=3`);
  if (f.cpuMs !== null && s.cpuMs !== null) console.log(`bench: fleet-cpu-per-recovery ratio=${((f.cpuMs + f.clientMs) / (s.cpuMs + s.clientMs)).toFixed(2)} (servers + load generator; the machine's load disturbs this least)`);
} finally {
  if (single) signal([single.child.pid], 'SIGCONT');
  if (cluster) signal(cluster.dcs.flatMap((d) => [d.etcdPid(), d.vaultPid()]), 'SIGCONT');
  await single?.stop();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
}
