// `npm run bench:relay [-- --seconds N] [-- --concurrency N]`
// Password recoveries (both OPAQUE round trips, HPKE, SQLite) through the front end
// (client → coffer-relay → coffer-vault) against the same recoveries sent straight to
// the vault, in one run, on one vault process. The direct client signs the link MAC
// itself (as a relay would), so both paths do the same vault work. Phases alternate
// direct/relay twice to even out drift. Ends with `bench: relay-recover ratio=X target=0.8`.
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const SECONDS = arg('seconds', 6);
const CONCURRENCY = arg('concurrency', 16);
const ACCOUNTS = arg('accounts', 256);
const VAULT_MAIN = join(root, 'packages/vault/dist/src/server/main.js');
const RELAY_MAIN = join(root, 'packages/relay/dist/src/main.js');
const protocol = await import(join(root, 'packages/protocol/dist/src/index.js'));
const { opaque, VaultClient, INSECURE_FAST_KSF_FOR_TESTING, parseFleetKeyBundle, relayAuthHeader } = protocol;
await opaque.ready;
const { installNodeCrypto } = await import(join(root, 'packages/vault/dist/src/server/node-crypto.js'));
installNodeCrypto();
const { sessionSigningInput } = await import(join(root, 'packages/relay/dist/src/auth/account-store.js'));

const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-relay-'));
const linkHex = 'be'.repeat(32);
const linkKeyFile = join(dir, 'link.key');
writeFileSync(linkKeyFile, linkHex + '\n', { mode: 0o600 });
const linkKey = Uint8Array.from(Buffer.from(linkHex, 'hex'));
const children = [];

function startChild(main, env) {
  const child = spawn(process.execPath, [main, 'serve'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
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

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY * 2 });
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

try {
  const vaultEnv = { COFFER_VAULT_DATA_DIR: join(dir, 'vault'), COFFER_VAULT_PORT: '0', COFFER_VAULT_LOG_LEVEL: 'warn', COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_LOGINS_PER_WINDOW: '64', COFFER_VAULT_LINK_KEY_FILE: linkKeyFile };
  const vault = await startChild(VAULT_MAIN, vaultEnv);
  const bundle = spawnSync(process.execPath, [VAULT_MAIN, 'bundle'], { env: { ...process.env, ...vaultEnv }, encoding: 'utf8' });
  if (bundle.status !== 0) throw new Error(bundle.stderr);
  const fleetKey = (await parseFleetKeyBundle(bundle.stdout)).keys[0];
  const big = { perSecond: 1e6, burst: 1e6 };
  const relayConfig = join(dir, 'relay.json');
  writeFileSync(relayConfig, JSON.stringify({ limits: { perAddress: big, perAccount: big, accountCreation: big, signInByAddress: big, signInByAccount: big } }));
  // The relay logs at its production default (info: one line per vault message).
  const relay = await startChild(RELAY_MAIN, { COFFER_RELAY_CONFIG: relayConfig, COFFER_RELAY_DATA_DIR: join(dir, 'relay'), COFFER_RELAY_PORT: '0', COFFER_RELAY_LINK_KEY_FILE: linkKeyFile, COFFER_RELAY_VAULT_NODES: vault.url, COFFER_RELAY_LOG_LEVEL: 'info' });

  const directTransport = (account) => async (bytes) => {
    const body = Buffer.from(bytes);
    const auth = await relayAuthHeader(linkKey, { method: 'POST', path: '/v1/request', account, body }, Date.now());
    const r = await post(`${vault.url}/v1/request`, { 'content-type': 'application/octet-stream', 'coffer-account': account, 'coffer-relay-auth': auth }, body);
    if (r.status !== 200) throw new Error(`vault ${r.status}`);
    return new Uint8Array(r.body);
  };
  const relayTransport = (token) => async (bytes) => {
    const r = await post(`${relay.url}/v1/vault`, { 'content-type': 'application/octet-stream', authorization: `Bearer ${token}` }, Buffer.from(bytes));
    if (r.status !== 200) throw new Error(`relay ${r.status}`);
    return new Uint8Array(r.body);
  };
  const client = (account, transport) => new VaultClient({ fleetKey, account, ksf: INSECURE_FAST_KSF_FOR_TESTING, transport });

  process.stderr.write(`bench-relay: registering ${ACCOUNTS} accounts on each path…\n`);
  const K = new Uint8Array(32).fill(7);
  const direct = [];
  const viaRelay = [];
  for (let i = 0; i < ACCOUNTS; i++) {
    const d = client(`bench-direct-${i}`, directTransport(`bench-direct-${i}`));
    if ((await d.register('bench password', K)).outcome !== 'ok') throw new Error('direct register failed');
    direct.push(d);
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const { account } = await json(`${relay.url}/v1/accounts`, { publicKey: publicKey.export({ format: 'jwk' }).x });
    const { challenge } = await json(`${relay.url}/v1/sessions/challenge`, { account });
    const signature = sign(null, sessionSigningInput(Buffer.from(challenge, 'base64url')), privateKey).toString('base64url');
    const { token } = await json(`${relay.url}/v1/sessions`, { account, challenge, signature });
    const r = client(`local:${account}`, relayTransport(token));
    if ((await r.register('bench password', K)).outcome !== 'ok') throw new Error('relay register failed');
    viaRelay.push(r);
  }

  async function phase(clients) {
    let n = 0;
    let failed = 0;
    let next = 0;
    const lat = [];
    const deadline = Date.now() + SECONDS * 1000;
    const lane = async () => {
      while (Date.now() < deadline) {
        const c = clients[next++ % clients.length];
        const t0 = performance.now();
        try {
          const r = await c.recover('bench password');
          if (r.outcome === 'ok') {
            n++;
            lat.push(performance.now() - t0);
          } else failed++;
        } catch {
          failed++;
        }
      }
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, lane));
    lat.sort((a, b) => a - b);
    return { rate: n / ((Date.now() - t0) / 1000), n, failed, p50: lat[Math.floor(lat.length / 2)] ?? 0, p99: lat[Math.floor(lat.length * 0.99)] ?? 0 };
  }

  const results = { direct: [], relay: [] };
  for (let round = 0; round < 2; round++) {
    results.direct.push(await phase(direct));
    results.relay.push(await phase(viaRelay));
  }
  const sum = (rs) => ({ rate: rs.reduce((s, r) => s + r.rate, 0) / rs.length, n: rs.reduce((s, r) => s + r.n, 0), failed: rs.reduce((s, r) => s + r.failed, 0), p50: Math.max(...rs.map((r) => r.p50)), p99: Math.max(...rs.map((r) => r.p99)) });
  const d = sum(results.direct);
  const r = sum(results.relay);
  const f = (x) => x.toFixed(1);
  console.log(`direct to vault : ${f(d.rate)} recoveries/s  (n=${d.n}, failed=${d.failed}, p50 ${f(d.p50)} ms, p99 ${f(d.p99)} ms)`);
  console.log(`through relay   : ${f(r.rate)} recoveries/s  (n=${r.n}, failed=${r.failed}, p50 ${f(r.p50)} ms, p99 ${f(r.p99)} ms)`);
  console.log(`(${SECONDS} s × 2 rounds per path, concurrency ${CONCURRENCY}, ${ACCOUNTS} accounts per path, one vault process, load generator and relay share this machine's cores)`);
  console.log(`bench: relay-recover ratio=${(r.rate / d.rate).toFixed(2)} target=0.8`);
} finally {
  agent.destroy();
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await new Promise((res) => setTimeout(res, 300));
  rmSync(dir, { recursive: true, force: true });
}
