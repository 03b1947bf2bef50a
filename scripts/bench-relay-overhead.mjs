// `node scripts/bench-relay-overhead.mjs [--requests N] [--concurrency C] [--rounds R] [--relay-main A.js,B.js] [--store sqlite|postgres]`
// The relay's own CPU per forwarded vault message (issue 13), without OPAQUE, HPKE or a
// vault: a stand-in vault on loopback answers every sealed request with RESPONSE_LENGTH
// bytes at once, a keep-alive load generator sends POST /v1/vault with a session token,
// and the relay (a child process, logging at its production default `info` to /dev/null)
// is measured from /proc: CPU ms per message, user and system apart.
//
// With `--relay-main A,B` two relay builds (e.g. a saved copy of dist/ and the current
// one) run in alternation, `--rounds` times each, against the same stand-in, so an A/B
// is measured in one run under the same load. CPU per message is what the relay costs;
// a loaded machine moves it less than it moves throughput. Profile a build with
// COFFER_BENCH_RELAY_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. `--store postgres`: the
// relays' account store on a throwaway PostgreSQL cluster (initdb'd in a temp dir, as the
// tests do; one database per relay build); the PostgreSQL server's CPU per message (all
// its processes, both builds' backends together) is printed apart from the relay's.
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argString } from './bench-args.mjs';
import { relayListening } from './relay-listening.mjs';

const REQUESTS = Number(argString('requests', 4000));
const CONCURRENCY = Number(argString('concurrency', 16));
const ROUNDS = Number(argString('rounds', 3));
const STORE = String(argString('store', 'sqlite'));
if (STORE !== 'sqlite' && STORE !== 'postgres') throw new Error('--store sqlite|postgres');
const mains = String(argString('relay-main', join(root, 'packages/relay/dist/src/main.js'))).split(',');
const { REQUEST_LENGTH, RESPONSE_LENGTH } = await import(join(root, 'packages/protocol/dist/src/index.js'));
const SESSION_LABEL = Buffer.from('coffer-relay/v1/session\0');

function stat(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
}

/** CPU seconds (user + system) of the process's main thread. */
function mainThread(pid) {
  const c = stat(`${pid}/task/${pid}`);
  return c.user + c.sys;
}

// CPU seconds of the PostgreSQL postmaster and its children (backends, background workers).
function postgresCpu(pid) {
  let kids;
  try {
    kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return 0;
  }
  return [pid, ...kids].reduce((sum, p) => {
    try {
      const c = stat(p);
      return sum + c.user + c.sys;
    } catch {
      return sum; // exited meanwhile
    }
  }, 0);
}

const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-relay-overhead-'));
const linkKeyFile = join(dir, 'link.key');
writeFileSync(linkKeyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
const big = { perSecond: 1e6, burst: 1e6 };
const configFile = join(dir, 'relay.json');
writeFileSync(configFile, JSON.stringify({ limits: { perAddress: big, perAccount: big, accountCreation: big, signInByAddress: big, signInByAccount: big, passwordSignInByAccount: big } }));

// The stand-in vault: reads the sealed request, answers a response-sized body.
const answer = randomBytes(RESPONSE_LENGTH);
const vault = createServer((req, res) => {
  req.resume();
  req.on('end', () => res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': answer.length }).end(answer));
});
vault.keepAliveTimeout = 65_000;
await new Promise((r) => vault.listen(0, '127.0.0.1', r));
const vaultUrl = `http://127.0.0.1:${vault.address().port}`;

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
function post(url, headers, body) {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { ...headers, 'content-length': body.length } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
const json = async (url, body) => {
  const r = await post(url, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(body)));
  if (r.status >= 300) throw new Error(`${url}: ${r.status} ${r.body}`);
  return JSON.parse(r.body.toString());
};

let postgres = null;
async function startRelay(main, n) {
  const pgEnv = postgres ? { COFFER_RELAY_ACCOUNT_STORE: 'postgres', COFFER_RELAY_PG_URL: await postgres.database(`bench${n}`) } : {};
  const extra = process.env.COFFER_BENCH_RELAY_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...extra, main, 'serve'], {
    env: { ...process.env, ...pgEnv, COFFER_RELAY_ADMIN: '0', COFFER_RELAY_CONFIG: configFile, COFFER_RELAY_DATA_DIR: join(dir, `relay-${n}`), COFFER_RELAY_PORT: '0', COFFER_RELAY_LINK_KEY_FILE: linkKeyFile, COFFER_RELAY_VAULT_NODES: vaultUrl, COFFER_RELAY_LOG_LEVEL: 'info' },
    // COFFER_BENCH_RELAY_STDOUT: a file for the relay's stdout (its log lines, --trace-gc).
    stdio: ['ignore', process.env.COFFER_BENCH_RELAY_STDOUT ? openSync(`${process.env.COFFER_BENCH_RELAY_STDOUT}.${n}`, 'w') : 'ignore', 'pipe'],
  });
  const url = await relayListening(child, main);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const { account } = await json(`${url}/v1/accounts`, { publicKey: publicKey.export({ format: 'jwk' }).x });
  const { challenge } = await json(`${url}/v1/sessions/challenge`, { account });
  const signature = sign(null, Buffer.concat([SESSION_LABEL, Buffer.from(challenge, 'base64url')]), privateKey).toString('base64url');
  const { token } = await json(`${url}/v1/sessions`, { account, challenge, signature });
  const exited = new Promise((r) => child.once('exit', r));
  return { child, url, token, stop: async () => (child.kill('SIGTERM'), await exited) };
}

async function run(relay, count) {
  const body = randomBytes(REQUEST_LENGTH);
  const headers = { 'content-type': 'application/octet-stream', authorization: `Bearer ${relay.token}` };
  let left = count;
  const lane = async () => {
    while (left-- > 0) {
      const r = await post(`${relay.url}/v1/vault`, headers, body);
      if (r.status !== 200 || r.body.length !== RESPONSE_LENGTH) throw new Error(`relay answered ${r.status} (${r.body.length} bytes)`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, lane));
}

const relays = [];
try {
  if (STORE === 'postgres') postgres = await (await import(join(root, 'packages', 'relay', 'dist', 'test', 'postgres.js'))).startPostgres();
  for (const [i, main] of mains.entries()) relays.push(await startRelay(main, i));
  // Warm-up (JIT, keep-alive sockets both sides), not counted.
  for (const r of relays) await run(r, Math.min(3000, REQUESTS));
  const results = relays.map(() => ({ user: 0, sys: 0, main: 0, wall: 0, n: 0, pg: 0, rounds: [] }));
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, r] of relays.entries()) {
      const c0 = stat(r.child.pid);
      const m0 = mainThread(r.child.pid);
      const pg0 = postgres ? postgresCpu(postgres.pid) : 0;
      const t0 = process.hrtime.bigint();
      await run(r, REQUESTS);
      const c1 = stat(r.child.pid);
      results[i].main += mainThread(r.child.pid) - m0;
      results[i].rounds.push((1000 * (c1.user - c0.user + c1.sys - c0.sys)) / REQUESTS);
      if (postgres) results[i].pg += postgresCpu(postgres.pid) - pg0;
      results[i].wall += Number(process.hrtime.bigint() - t0) / 1e9;
      results[i].user += c1.user - c0.user;
      results[i].sys += c1.sys - c0.sys;
      results[i].n += REQUESTS;
    }
  }
  const f = (x) => x.toFixed(3);
  for (const [i, x] of results.entries()) {
    console.log(`relay [${STORE}] ${mains[i]}: ${x.n} vault messages, ${f((1000 * (x.user + x.sys)) / x.n)} ms CPU/message (user ${f((1000 * x.user) / x.n)}, system ${f((1000 * x.sys) / x.n)}; main thread ${f((1000 * x.main) / x.n)}, other threads ${f((1000 * (x.user + x.sys - x.main)) / x.n)}), ${(x.n / x.wall).toFixed(0)} messages/s${postgres ? `; PostgreSQL server ${f((1000 * x.pg) / x.n)} ms CPU/message` : ''}`);
  }
  if (results.length === 2) {
    // Round by round (the builds ran alternately): CPU ms/message of each, and their ratio.
    const pairs = results[0].rounds.map((a, k) => [a, results[1].rounds[k]]);
    console.log(`per round (first/second ms CPU/message, ratio): ${pairs.map(([a, b]) => `${f(a)}/${f(b)} ${(b / a).toFixed(2)}`).join(', ')}`);
    const sorted = pairs.map(([a, b]) => b / a).sort((x, y) => x - y);
    console.log(`median per-round ratio ${sorted[Math.floor(sorted.length / 2)].toFixed(2)}`);
    const cpu = (x) => (x.user + x.sys) / x.n;
    console.log(`bench: relay-overhead cpu-ratio=${(cpu(results[1]) / cpu(results[0])).toFixed(2)} (second build / first; < 1: the second costs less)`);
  }
} finally {
  for (const r of relays) await r.stop();
  agent.destroy();
  vault.closeAllConnections();
  vault.close();
  await postgres?.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}
