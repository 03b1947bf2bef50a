// A load-generator process for scripts/bench-relay.mjs (forked, never run by hand); the
// same approach as scripts/bench-vault-worker.mjs. It plays the clients of its slice of
// accounts on both paths — straight to the vault (signing the relay link MAC itself, as
// a relay would) and through coffer-relay (built-in accounts, bearer sessions) — so the
// two paths are driven by the same generator. Before each timed window it precomputes
// what a client may prepare before talking to the vault (sealed login-start with KE1,
// the HPKE ephemeral both requests share, spec §3.2, and its DH); live: OPAQUE finishLogin (bench KSF),
// sealing login-finish, opening both answers, checking the released K.
import { generateKeyPairSync, sign } from 'node:crypto';
import { request, Agent } from 'node:http';
import { performance } from 'node:perf_hooks';

const { protocolPath, nodeCryptoPath } = JSON.parse(process.env.COFFER_BENCH_WORKER);
const protocol = await import(protocolPath);
const { opaque, VaultClient, INSECURE_FAST_KSF_FOR_TESTING, parseFleetKeyBundle, toSerenityKeyStretching, sealRequest, encodeRequestBody, decodeResponseBody, pad, unpad, fromBase64Url, toBase64Url, openRelease, unwrapBackupKey, reusableEphemeral, equalBytes, relayAuthHeader } =
  protocol;
await opaque.ready;
const { installNodeCrypto } = await import(nodeCryptoPath);
installNodeCrypto();

const KSF = INSECURE_FAST_KSF_FOR_TESTING;
const PASSWORD = 'bench password';
const K = new Uint8Array(32).fill(7);
const SESSION_LABEL = Buffer.from('coffer-relay/v1/session\0');

function post(agent, url, headers, body) {
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

async function json(agent, url, body) {
  const r = await post(agent, url, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(body)));
  if (r.status >= 300) throw new Error(`${url}: ${r.status} ${r.body}`);
  return JSON.parse(r.body.toString());
}

function directSend(agent, vaultUrl, linkKey, account) {
  return async (bytes) => {
    const body = Buffer.from(bytes);
    const auth = await relayAuthHeader(linkKey, { method: 'POST', path: '/v1/request', account, body }, Date.now());
    const r = await post(agent, `${vaultUrl}/v1/request`, { 'content-type': 'application/octet-stream', 'coffer-account': account, 'coffer-relay-auth': auth }, body);
    if (r.status !== 200) throw new Error(`vault HTTP ${r.status} ${r.body}`);
    return new Uint8Array(r.body);
  };
}

function relaySend(agent, relayUrl, token) {
  return async (bytes) => {
    const r = await post(agent, `${relayUrl}/v1/vault`, { 'content-type': 'application/octet-stream', authorization: `Bearer ${token}` }, Buffer.from(bytes));
    if (r.status !== 200) throw new Error(`relay HTTP ${r.status} ${r.body}`);
    return new Uint8Array(r.body);
  };
}

let state;

async function precomputeOne(account) {
  const start = opaque.client.startLogin({ password: PASSWORD });
  // One ephemeral for the login-start and the login-finish, as VaultClient.recover does (spec §3.2).
  const ephemeral = await reusableEphemeral();
  await ephemeral.dh(state.fleetKey.publicKey); // now, untimed: both seals reuse it
  const sealed = await sealRequest(state.fleetKey, account, 'login-start', pad(encodeRequestBody({ op: 'login-start', timestampMs: Date.now(), ke1: fromBase64Url(start.startLoginRequest) })), { ephemeral });
  return { start, sealed, ephemeral };
}

async function recoverOnce(account, send, pre) {
  const open = async (sealed, op) => {
    const res = decodeResponseBody(unpad(await sealed.openResponse(await send(sealed.bytes))));
    if (res.op !== op) throw new Error(`vault answered ${res.op} to ${op}`);
    return res;
  };
  const r1 = await open(pre.sealed, 'login-start');
  if (r1.outcome !== 'ok') return r1.outcome;
  const finish = opaque.client.finishLogin({ password: PASSWORD, clientLoginState: pre.start.clientLoginState, loginResponse: toBase64Url(r1.ke2), keyStretching: toSerenityKeyStretching(r1.ksf) });
  if (!finish) return 'client-finish-failed';
  const s2 = await sealRequest(state.fleetKey, account, 'login-finish', pad(encodeRequestBody({ op: 'login-finish', nonce: r1.nonce, ke3: fromBase64Url(finish.finishLoginRequest) })), { ephemeral: pre.ephemeral });
  const r2 = await open(s2, 'login-finish');
  if (r2.outcome !== 'ok') return r2.outcome;
  const wrapped = await openRelease(fromBase64Url(finish.sessionKey), account, r2.releasedKey);
  const k = await unwrapBackupKey(fromBase64Url(finish.exportKey), account, wrapped);
  return equalBytes(k, K) ? 'ok' : 'wrong-key';
}

/** One lane per concurrent recovery; each lane owns disjoint accounts (no overlapping logins of one account). */
function toLanes(accounts, lanes) {
  return Array.from({ length: lanes }, (_, l) => accounts.filter((_, i) => i % lanes === l));
}

const handlers = {
  async setup(msg) {
    const fleetKey = (await parseFleetKeyBundle(msg.bundle)).keys[0];
    const agent = new Agent({ keepAlive: true, maxSockets: msg.lanes * 2 });
    const linkKey = Uint8Array.from(Buffer.from(msg.linkKeyHex, 'hex'));
    state = { fleetKey, agent, paths: {} };
    const direct = [];
    // `relay`, and `relayB` when a second relay build runs beside it (an A/B in one run).
    const relayUrls = { relay: msg.relayUrl, ...(msg.relayBUrl ? { relayB: msg.relayBUrl } : {}) };
    const relays = Object.fromEntries(Object.keys(relayUrls).map((p) => [p, []]));
    for (let i = 0; i < msg.accountsPerPath; i++) {
      const account = `bench-direct-${msg.worker}-${i}`;
      direct.push({ account, send: directSend(agent, msg.vaultUrl, linkKey, account), pool: [] });
      for (const [path, relayUrl] of Object.entries(relayUrls)) {
        const { privateKey, publicKey } = generateKeyPairSync('ed25519');
        const { account: id } = await json(agent, `${relayUrl}/v1/accounts`, { publicKey: publicKey.export({ format: 'jwk' }).x });
        const { challenge } = await json(agent, `${relayUrl}/v1/sessions/challenge`, { account: id });
        const signature = sign(null, Buffer.concat([SESSION_LABEL, Buffer.from(challenge, 'base64url')]), privateKey).toString('base64url');
        const { token } = await json(agent, `${relayUrl}/v1/sessions`, { account: id, challenge, signature });
        relays[path].push({ account: `local:${id}`, send: relaySend(agent, relayUrl, token), pool: [] });
      }
    }
    state.paths = { direct: toLanes(direct, msg.lanes), ...Object.fromEntries(Object.entries(relays).map(([p, accounts]) => [p, toLanes(accounts, msg.lanes)])) };
    for (const lanes of Object.values(state.paths)) {
      await Promise.all(
        lanes.map(async (lane) => {
          for (const a of lane) {
            const r = await new VaultClient({ fleetKey, account: a.account, ksf: KSF, transport: a.send }).register(PASSWORD, K);
            if (r.outcome !== 'ok') throw new Error(`register ${a.account}: ${r.outcome}`);
          }
        }),
      );
      await Promise.all(lanes.map(async (lane) => recoverOnce(lane[0].account, lane[0].send, await precomputeOne(lane[0].account))));
    }
    return {};
  },
  async precompute(msg) {
    const lanes = state.paths[msg.path];
    const perLane = Math.ceil(msg.perWorker / lanes.length);
    for (const lane of lanes) for (let i = 0; i < perLane; i++) lane[i % lane.length].pool.push(await precomputeOne(lane[i % lane.length].account));
    return {};
  },
  async run(msg) {
    const latencies = [];
    const failures = {};
    let live = 0;
    const cpu0 = process.cpuUsage();
    await Promise.all(
      state.paths[msg.path].map(async (lane) => {
        for (let i = 0; Date.now() < msg.deadlineEpochMs; i++) {
          const a = lane[i % lane.length];
          let pre = a.pool.pop();
          if (!pre) {
            live++;
            pre = await precomputeOne(a.account);
          }
          const s = performance.now();
          let outcome;
          try {
            outcome = await recoverOnce(a.account, a.send, pre);
          } catch (err) {
            outcome = String(err.message).slice(0, 60);
          }
          if (outcome === 'ok') latencies.push(performance.now() - s);
          else failures[outcome] = (failures[outcome] ?? 0) + 1;
        }
      }),
    );
    // Leftover precomputed items are stale for the next window's freshness: drop them.
    for (const lane of state.paths[msg.path]) for (const a of lane) a.pool.length = 0;
    const cpu = process.cpuUsage(cpu0);
    return { latencies, failures, live, cpuMs: (cpu.user + cpu.system) / 1000 };
  },
};

process.on('message', (msg) => {
  if (msg.type === 'exit') {
    state?.agent.destroy();
    process.exit(0);
  }
  handlers[msg.type](msg).then(
    (result) => process.send({ type: msg.type, ok: true, ...result }),
    (err) => process.send({ type: msg.type, ok: false, error: String(err?.stack ?? err) }),
  );
});
process.send({ type: 'ready', ok: true });
