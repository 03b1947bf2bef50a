// `node scripts/bench-relay-upload.mjs [--mib N] [--object-mib M] [--rounds R] [--client-dist A,B]`
// The cost of a streamed upload to the relay's blob API (issue 13), without the backup
// engine: a client process sends N MiB as objects of M MiB through RelayHttp.upload and
// the Node upload transport, in batches shaped like the engine's (sealed 64 KiB segments
// as ciphertext and 16-byte tag, ~1 MiB per batch), to a relay on loopback with a local
// blob store. Prints CPU per MiB of the client and of the relay, user and system apart.
//
// `--client-dist A,B` (two builds of packages/client/dist, e.g. a saved copy and the
// current one) runs both in alternation, `--rounds` times each, against the same relay,
// so an A/B is measured in one run under the same load. Profiles: COFFER_BENCH_RELAY_NODE_ARGS
// and COFFER_BENCH_CLIENT_NODE_ARGS (e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof').
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argString } from './bench-args.mjs';
import { relayListening } from './relay-listening.mjs';


if (process.env.COFFER_BENCH_UPLOAD_CHILD) {
  // The client side: one process per round.
  const { dist, url, token, mib, objectMib, prefix } = JSON.parse(process.env.COFFER_BENCH_UPLOAD_CHILD);
  const { RelayHttp } = await import(join(dist, 'src', 'relay-http.js'));
  const { NodeUploadTransport } = await import(join(dist, 'src', 'node-transport.js'));
  const uploads = new NodeUploadTransport();
  const relay = new RelayHttp({ server: url, token: () => token, uploads });
  // Distinct segment contents would cost the client the same either way: one pool.
  const seg = randomBytes(65536);
  const tag = randomBytes(16);
  const perObject = Math.round((objectMib * 1024 * 1024) / 65552);
  const objects = Math.round(mib / objectMib);
  async function* body() {
    let left = perObject;
    while (left > 0) {
      const batch = [];
      for (let i = 0; i < 16 && left > 0; i++, left--) batch.push(new Uint8Array(seg), tag);
      yield batch;
    }
  }
  const c0 = process.cpuUsage();
  let next = 0;
  const lane = async () => {
    while (next < objects) {
      const k = next++;
      const a = await relay.upload({ path: `/v1/blobs/${prefix}/${k}`, body: body(), signal: AbortSignal.timeout(120_000), pass: [] });
      if (a.status !== 201) throw new Error(`upload ${k}: ${a.status}`);
    }
  };
  await Promise.all([lane(), lane()]);
  const c = process.cpuUsage(c0);
  uploads.close();
  process.send({ user: c.user / 1e6, sys: c.system / 1e6 });
  process.exit(0);
}

const MIB = Number(argString('mib', 256));
const OBJECT_MIB = Number(argString('object-mib', 8));
const ROUNDS = Number(argString('rounds', 3));
const dists = String(argString('client-dist', join(root, 'packages/client/dist'))).split(',');

function stat(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
}
function post(url, body) {
  return new Promise((resolve, reject) => {
    const b = Buffer.from(JSON.stringify(body));
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': b.length } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => (res.statusCode < 300 ? resolve(JSON.parse(Buffer.concat(chunks).toString())) : reject(new Error(`${url}: ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(b);
  });
}

const dir = mkdtempSync(join(process.env.COFFER_BENCH_DIR ?? tmpdir(), 'coffer-bench-relay-upload-'));
writeFileSync(join(dir, 'link.key'), randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
const extra = process.env.COFFER_BENCH_RELAY_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
const relay = spawn(process.execPath, [...extra, process.env.COFFER_BENCH_RELAY_MAIN || join(root, 'packages/relay/dist/src/main.js'), 'serve'], {
  env: { ...process.env, COFFER_RELAY_DATA_DIR: join(dir, 'relay'), COFFER_RELAY_PORT: '0', COFFER_RELAY_ADMIN: '0', COFFER_RELAY_LINK_KEY_FILE: join(dir, 'link.key'), COFFER_RELAY_LOG_LEVEL: 'info', COFFER_RELAY_MAX_IN_FLIGHT_BYTES: String(1 << 30) },
  // COFFER_BENCH_RELAY_STDOUT: a file for the relay's stdout (its log lines, --trace-gc).
  stdio: ['ignore', process.env.COFFER_BENCH_RELAY_STDOUT ? openSync(process.env.COFFER_BENCH_RELAY_STDOUT, 'w') : 'ignore', 'pipe'],
});
const exited = new Promise((r) => relay.once('exit', r));
try {
  const url = await relayListening(relay);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const { account } = await post(`${url}/v1/accounts`, { publicKey: publicKey.export({ format: 'jwk' }).x });
  const { challenge } = await post(`${url}/v1/sessions/challenge`, { account });
  const signature = sign(null, Buffer.concat([Buffer.from('coffer-relay/v1/session\0'), Buffer.from(challenge, 'base64url')]), privateKey).toString('base64url');
  const { token } = await post(`${url}/v1/sessions`, { account, challenge, signature });
  const results = dists.map(() => ({ cu: 0, cs: 0, ru: 0, rs: 0, wall: 0, mib: 0 }));
  let n = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, dist] of dists.entries()) {
      const r0 = stat(relay.pid);
      const t0 = Date.now();
      const child = spawn(process.execPath, [...(process.env.COFFER_BENCH_CLIENT_NODE_ARGS?.split(' ').filter(Boolean) ?? []), process.argv[1]], { env: { ...process.env, COFFER_BENCH_UPLOAD_CHILD: JSON.stringify({ dist, url, token, mib: MIB, objectMib: OBJECT_MIB, prefix: `r${n++}` }) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const cpu = await new Promise((resolve, reject) => {
        child.once('message', resolve);
        child.once('exit', (c) => c !== 0 && reject(new Error(`upload client exited ${c}`)));
      });
      const r1 = stat(relay.pid);
      const x = results[i];
      x.wall += (Date.now() - t0) / 1000;
      x.cu += cpu.user;
      x.cs += cpu.sys;
      x.ru += r1.user - r0.user;
      x.rs += r1.sys - r0.sys;
      x.mib += MIB;
    }
  }
  const f = (v, m) => ((1000 * v) / m).toFixed(2);
  for (const [i, x] of results.entries()) {
    console.log(`upload ${dists[i]}: ${x.mib} MiB in ${OBJECT_MIB} MiB objects; client ${f(x.cu + x.cs, x.mib)} ms CPU/MiB (user ${f(x.cu, x.mib)}, system ${f(x.cs, x.mib)}); relay ${f(x.ru + x.rs, x.mib)} ms CPU/MiB (user ${f(x.ru, x.mib)}, system ${f(x.rs, x.mib)}); ${(x.mib / x.wall).toFixed(0)} MiB/s`);
  }
  if (results.length === 2) {
    const t = (x) => x.cu + x.cs + x.ru + x.rs;
    console.log(`bench: relay-upload cpu-ratio=${(t(results[1]) / t(results[0])).toFixed(2)} (client + relay, second build / first)`);
  }
} finally {
  relay.kill('SIGTERM');
  await exited;
  rmSync(dir, { recursive: true, force: true });
}
