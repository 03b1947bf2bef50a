// `node scripts/bench-vault-http.mjs [OTHER_ROOT…] [--rounds N] [--requests N] [--lanes N] [--port P] [--host ADDR]` (after `npx tsc -b`)
// The vault's HTTP layer alone: CPU per POST /v1/request of this build's request app and of
// other builds' (each OTHER_ROOT a built copy of the repository), with a service that answers
// at once (a fixed 560-byte response: no OPAQUE, HPKE, store), so the HTTP handling —
// parsing, routing, the per-request log line (pino at info to /dev/null), metrics, the reply
// — is what is measured. Real sockets on --host (default 127.0.0.1; ports P, P+1, …), kept alive; the client
// runs in this process and is the same for every build, so compare the builds' difference.
// Rounds interleave the builds (load from other processes falls on all alike); medians printed.
import { createWriteStream } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argNumber, argString, positionalArgs } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 9);
const REQUESTS = argNumber('requests', 4000);
const LANES = argNumber('lanes', 32);
const PORT = argNumber('port', 26600);
const HOST = argString('host', '127.0.0.1');
const roots = [root, ...positionalArgs()];
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function open(buildRoot, port) {
  const { buildApp } = await import(join(buildRoot, 'packages/vault/dist/src/server/app.js'));
  const { createMetrics } = await import(join(buildRoot, 'packages/vault/dist/src/server/metrics.js'));
  const response = new Uint8Array(560).fill(1);
  const service = { handle: async () => ({ kind: 'answer', decision: { op: 'login-start', outcome: 'ok', response, write: null, guessCounted: false, recordErased: false, eraseAt: null } }) };
  const app = buildApp({ service, metrics: createMetrics(), describe: { platform: 'none', store: 'none' }, logger: { level: 'info', stream: createWriteStream('/dev/null') } });
  await app.listen({ host: HOST, port });
  const agent = new Agent({ keepAlive: true, maxSockets: LANES });
  const body = Buffer.alloc(603, 2);
  const send = () =>
    new Promise((resolve, reject) => {
      const req = request({ host: HOST, port, path: '/v1/request', method: 'POST', agent, headers: { 'content-type': 'application/octet-stream', 'content-length': body.length, 'coffer-account': 'bench-account' } }, (res) => {
        let n = 0;
        res.on('data', (c) => (n += c.length));
        res.on('end', () => (res.statusCode === 200 && n === 560 ? resolve() : reject(new Error(`${buildRoot}: HTTP ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
  return { buildRoot, app, agent, send, rounds: [] };
}

async function round(b) {
  let left = REQUESTS;
  const c = cpuMs();
  await Promise.all(Array.from({ length: LANES }, async () => {
    while (left-- > 0) await b.send();
  }));
  b.rounds.push(((cpuMs() - c) / REQUESTS) * 1000);
}

const builds = [];
try {
  for (const [n, r] of roots.entries()) builds.push(await open(r, PORT + n));
  for (const b of builds) await round(b); // warm-up
  for (const b of builds) b.rounds.length = 0;
  for (let i = 0; i < ROUNDS; i++) for (const b of builds) await round(b);
  console.log(`HTTP layer CPU per POST /v1/request (server + the same in-process client; ${LANES} kept-alive sockets, ${REQUESTS} requests per round, ${ROUNDS} interleaved rounds; µs):`);
  for (const b of builds) console.log(`  ${b.buildRoot}: median ${median(b.rounds).toFixed(1)}  min ${Math.min(...b.rounds).toFixed(1)}  rounds ${b.rounds.map((x) => x.toFixed(1)).join(' ')}`);
  for (const b of builds.slice(1)) {
    const per = builds[0].rounds.map((x, i) => x / b.rounds[i]);
    console.log(`  ${builds[0].buildRoot} / ${b.buildRoot}, per round: median ${median(per).toFixed(3)} (rounds ${per.map((x) => x.toFixed(3)).join(' ')})`);
  }
} finally {
  for (const b of builds) {
    b.agent.destroy();
    await b.app.close();
  }
}
