// `npm run bench:vault [-- --seconds N] [-- --concurrency N]`
// The Backup Key Vault's recovery throughput against the bare OPAQUE library, in one run:
//   1. ceiling: @serenity-kit/opaque server startLogin + finishLogin, one core, in a loop
//      (only the server calls are timed; the client side is computed untimed);
//   2. full recoveries (both round trips, HPKE, sealing, SQLite with fsync, over HTTP on
//      127.0.0.1) against one coffer-vault process on the software platform, then on a
//      SoftHSM2 token (PKCS#11).
// The vault process is one Node process (one core for its JS); the load generator runs
// here. Prints recoveries/s, p50/p99, vault CPU per recovery, the ratio to the ceiling,
// and ends with `bench: NAME ratio=X target=Y` lines.
//
// ratio = min(wall recoveries/s, recoveries per vault CPU-second) / ceiling. The
// CPU-normalised figure is what one vault core sustains; when the load generator (which
// shares this 2-core machine and does the clients' OPAQUE and HPKE work) cannot saturate
// the vault, wall throughput is lower, and both are printed.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request, Agent } from 'node:http';
import { performance } from 'node:perf_hooks';
import { root } from './ensure-setup.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const SECONDS = arg('seconds', 8);
const CONCURRENCY = arg('concurrency', 24);
// Enough accounts that no account reaches the per-account login rate limit
// (loginsPerWindow, at most 64 per 5 minutes) during a run; each client worker owns a
// disjoint slice, so no two recoveries of one account overlap.
const ACCOUNTS = arg('accounts', 768);
const MAIN = join(root, 'packages', 'vault', 'dist', 'src', 'server', 'main.js');
const protocol = await import(join(root, 'packages', 'protocol', 'dist', 'src', 'index.js'));
const { opaque, VaultClient, INSECURE_FAST_KSF_FOR_TESTING, parseFleetKeyBundle, toSerenityKeyStretching } = protocol;
await opaque.ready;
const { installNodeCrypto } = await import(join(root, 'packages', 'vault', 'dist', 'src', 'server', 'node-crypto.js'));
installNodeCrypto(); // the load generator's envelopes on node:crypto too

const fmt = (x, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

// ── 1. the library ceiling ────────────────────────────────────────────────────────────
function ceiling() {
  const setup = opaque.server.createSetup();
  const ks = toSerenityKeyStretching(INSECURE_FAST_KSF_FOR_TESTING);
  const rs = opaque.client.startRegistration({ password: 'pw' });
  const { registrationResponse } = opaque.server.createRegistrationResponse({ serverSetup: setup, userIdentifier: 'u', registrationRequest: rs.registrationRequest });
  const { registrationRecord } = opaque.client.finishRegistration({ clientRegistrationState: rs.clientRegistrationState, registrationResponse, password: 'pw', keyStretching: ks });
  let serverNs = 0n;
  let n = 0;
  const deadline = Date.now() + Math.max(3, SECONDS / 2) * 1000;
  while (Date.now() < deadline) {
    const c = opaque.client.startLogin({ password: 'pw' });
    const t0 = process.hrtime.bigint();
    const s = opaque.server.startLogin({ serverSetup: setup, userIdentifier: 'u', registrationRecord, startLoginRequest: c.startLoginRequest });
    const t1 = process.hrtime.bigint();
    const f = opaque.client.finishLogin({ clientLoginState: c.clientLoginState, loginResponse: s.loginResponse, password: 'pw', keyStretching: ks });
    const t2 = process.hrtime.bigint();
    opaque.server.finishLogin({ serverLoginState: s.serverLoginState, finishLoginRequest: f.finishLoginRequest });
    serverNs += t1 - t0 + (process.hrtime.bigint() - t2);
    n++;
  }
  return n / (Number(serverNs) / 1e9);
}

// ── 2. a vault process and a load generator ──────────────────────────────────────────
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, clock ticks of 10 ms
}

async function startVault(env) {
  const child = spawn(process.execPath, [MAIN, 'serve'], { env: { ...process.env, COFFER_VAULT_PORT: '0', COFFER_VAULT_LOG_LEVEL: 'warn', COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_LOGINS_PER_WINDOW: '64', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const url = await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      err += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(err);
      if (m) resolve(m[1]);
    });
    child.once('exit', (c) => reject(new Error(`coffer-vault exited ${c}: ${err}`)));
  });
  return { child, url, stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }) };
}

function transport(url, account, agent) {
  return (body) =>
    new Promise((resolve, reject) => {
      const req = request(`${url}/v1/request`, { method: 'POST', agent, headers: { 'content-type': 'application/octet-stream', 'coffer-account': account, 'content-length': body.length } }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => (res.statusCode === 200 ? resolve(new Uint8Array(Buffer.concat(chunks))) : reject(new Error(`HTTP ${res.statusCode} ${Buffer.concat(chunks)}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
}

async function run(name, env, bundleEnv) {
  const vault = await startVault(env);
  try {
    const out = spawnSync(process.execPath, [MAIN, 'bundle'], { env: { ...process.env, ...bundleEnv }, encoding: 'utf8' });
    if (out.status !== 0) throw new Error(out.stderr);
    const fleetKey = (await parseFleetKeyBundle(out.stdout)).keys[0];
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const clients = Array.from({ length: ACCOUNTS }, (_, i) => new VaultClient({ fleetKey, account: `bench-${i}`, ksf: INSECURE_FAST_KSF_FOR_TESTING, transport: transport(vault.url, `bench-${i}`, agent) }));
    const K = new Uint8Array(32).fill(7);
    const slices = Array.from({ length: CONCURRENCY }, (_, w) => clients.filter((_, i) => i % CONCURRENCY === w));
    await Promise.all(slices.map(async (slice) => { for (const c of slice) await c.register('bench password', K); }));
    // warm-up
    await Promise.all(slices.map((slice) => slice[0].recover('bench password')));
    const latencies = [];
    let failures = 0;
    const cpu0 = cpuSeconds(vault.child.pid);
    const load0 = process.cpuUsage();
    const t0 = performance.now();
    const deadline = t0 + SECONDS * 1000;
    await Promise.all(
      slices.map(async (slice) => {
        for (let i = 0; performance.now() < deadline; i++) {
          const c = slice[i % slice.length];
          const s = performance.now();
          const r = await c.recover('bench password');
          if (r.outcome !== 'ok') failures++;
          else latencies.push(performance.now() - s);
        }
      }),
    );
    const wall = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(vault.child.pid) - cpu0;
    const load = process.cpuUsage(load0);
    const loadMs = (load.user + load.system) / 1000 / Math.max(1, latencies.length);
    agent.destroy();
    latencies.sort((a, b) => a - b);
    return { name, n: latencies.length, failures, rate: latencies.length / wall, perCpu: latencies.length / cpu, cpuMs: (cpu * 1000) / latencies.length, loadMs, p50: pct(latencies, 50), p99: pct(latencies, 99) };
  } finally {
    await vault.stop();
  }
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
try {
  process.stderr.write(`bench:vault: ${SECONDS}s per run, ${CONCURRENCY} concurrent clients, ${process.env.COFFER_BENCH_CPUS ?? 'all'} cores\n`);
  const ceil = ceiling();
  console.log(`ceiling   @serenity-kit/opaque server startLogin+finishLogin, one core: ${fmt(ceil)} logins/s`);
  const results = [];
  const swDir = join(work, 'software');
  results.push(await run('vault-software', { COFFER_VAULT_DATA_DIR: swDir }, { COFFER_VAULT_DATA_DIR: swDir }));
  const hsmDir = join(work, 'pkcs11');
  mkdirSync(hsmDir);
  const hsm = softhsmToken(hsmDir);
  if (hsm) {
    const env = { ...hsm, COFFER_VAULT_DATA_DIR: hsmDir };
    const made = spawnSync(process.execPath, [MAIN, 'keys', 'create'], { env: { ...process.env, ...env }, encoding: 'utf8' });
    if (made.status !== 0) throw new Error(made.stderr);
    results.push(await run('vault-pkcs11', env, env));
  } else {
    console.log('SoftHSM2 not installed: skipping the PKCS#11 run');
  }
  const targets = { 'vault-software': 0.6, 'vault-pkcs11': 0.5 };
  for (const r of results) {
    console.log(
      `${r.name.padEnd(15)} ${fmt(r.rate)} recoveries/s over HTTP (p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms, ${r.n} ok, ${r.failures} failed); ` +
        `vault CPU ${fmt(r.cpuMs, 2)} ms/recovery = ${fmt(r.perCpu)} recoveries per vault core-second; load generator CPU ${fmt(r.loadMs, 2)} ms/recovery`,
    );
  }
  for (const r of results) {
    const ratio = Math.min(r.rate, r.perCpu) / ceil;
    console.log(`${r.name}: wall ratio ${fmt(r.rate / ceil, 2)}, per-core ratio ${fmt(r.perCpu / ceil, 2)}`);
    console.log(`bench: ${r.name} ratio=${ratio.toFixed(2)} target=${targets[r.name]}`);
  }
  if (!hsm) console.log('bench: vault-pkcs11 ratio=n/a target=0.5');
} finally {
  rmSync(work, { recursive: true, force: true });
}
