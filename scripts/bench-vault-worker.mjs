// A load-generator process for scripts/bench-vault.mjs (forked, never run by hand).
// It plays the clients of its slice of accounts: registers them, precomputes what the
// protocol lets a client prepare before it talks to the vault, then runs recoveries in
// a loop until the deadline and reports latencies.
//
// Precomputed per recovery (before the timed window; the vault does none of this work):
//   - the login-start request: OPAQUE KE1 + timestamp, HPKE-sealed to the fleet key
//     (a fresh ephemeral per recovery, so every login-start is distinct; the vault's replay
//     check sees a new one each time, and the 5-minute freshness window is never close);
//     the login-finish is sealed with the same ephemeral (spec §3.2), its DH with the
//     fleet key computed once here (RFC 9180 Encap does not depend on the message).
// Done live (it depends on the vault's KE2): OPAQUE finishLogin with the bench KSF, the
// HPKE key schedule + seal of login-finish, opening both responses, and checking that
// the released key unwraps to the registered K.
//
// KSF: INSECURE_FAST_KSF_FOR_TESTING. The password KSF (argon2id) runs on the client,
// never on the vault, so it is not part of the vault's cost; with the real KSF the
// client would spend ~1 s per recovery and the bench would measure argon2id.
import { request, Agent } from 'node:http';
import { performance } from 'node:perf_hooks';

const { root, protocolPath, nodeCryptoPath } = JSON.parse(process.env.COFFER_BENCH_WORKER);
void root;
const protocol = await import(protocolPath);
const { opaque, VaultClient, INSECURE_FAST_KSF_FOR_TESTING, parseFleetKeyBundle, toSerenityKeyStretching, sealRequest, encodeRequestBody, decodeResponseBody, pad, unpad, fromBase64Url, toBase64Url, openRelease, unwrapBackupKey, reusableEphemeral, equalBytes } =
  protocol;
await opaque.ready;
const { installNodeCrypto } = await import(nodeCryptoPath);
installNodeCrypto(); // the clients' envelopes on node:crypto

const KSF = INSECURE_FAST_KSF_FOR_TESTING;
const PASSWORD = 'bench password';
const K = new Uint8Array(32).fill(7);

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

/** Sends one request per item of the cycle, the lanes concurrently; this process's CPU and wall time for it. */
async function timedSends(fn) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(state.cycle.map(async (items) => {
    for (const it of items) await fn(it);
  }));
  const cpu = process.cpuUsage(cpu0);
  return { ms: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000, n: state.cycle.reduce((s, l) => s + l.length, 0) };
}

const handlers = {
  async setup(msg) {
    const fleetKey = (await parseFleetKeyBundle(msg.bundle)).keys[0];
    const agent = new Agent({ keepAlive: true, maxSockets: msg.lanes });
    // Each lane owns a disjoint set of accounts, so no two recoveries of one account
    // overlap (a second login-start would replace the first one's pending login).
    const lanes = Array.from({ length: msg.lanes }, (_, l) => msg.accounts.filter((_, i) => i % msg.lanes === l).map((account) => ({ account, send: transport(msg.url, account, agent), pool: [] })));
    state = { fleetKey, agent, lanes };
    await Promise.all(
      lanes.map(async (lane) => {
        for (const a of lane) {
          const c = new VaultClient({ fleetKey, account: a.account, ksf: KSF, transport: a.send });
          const r = await c.register(PASSWORD, K);
          if (r.outcome !== 'ok') throw new Error(`register ${a.account}: ${r.outcome}`);
        }
      }),
    );
    // warm-up: one live recovery per lane
    await Promise.all(lanes.map(async (lane) => recoverOnce(lane[0].account, lane[0].send, await precomputeOne(lane[0].account))));
    return {};
  },
  async precompute(msg) {
    const t0 = performance.now();
    const perLane = Math.ceil(msg.perWorker / state.lanes.length);
    for (const lane of state.lanes) for (let i = 0; i < perLane; i++) lane[i % lane.length].pool.push(await precomputeOne(lane[i % lane.length].account));
    return { ms: performance.now() - t0, items: perLane * state.lanes.length };
  },
  // Phased cycles (the default method of bench:vault): every lane's next accounts, each
  // once. `prepare` (untimed) seals their login-starts; `starts` sends them (timed by the
  // parent); `finishPrepare` (untimed) runs OPAQUE finishLogin and seals the
  // login-finishes; `finishes` sends them (timed); `verify` (untimed) opens the answers
  // and checks the released key. In the timed phases this process only does HTTP.
  async prepare(msg) {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    state.cycle = await Promise.all(
      state.lanes.map(async (lane) => {
        const items = [];
        for (let i = 0; i < Math.min(msg.perLane, lane.length); i++) {
          const a = lane[(lane.next = ((lane.next ?? -1) + 1) % lane.length)];
          items.push({ a, pre: await precomputeOne(a.account) });
        }
        return items;
      }),
    );
    const cpu = process.cpuUsage(cpu0);
    return { ms: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000, items: state.cycle.reduce((s, l) => s + l.length, 0) };
  },
  async starts() {
    return timedSends(async (it) => {
      it.bytes1 = await it.a.send(it.pre.sealed.bytes);
    });
  },
  async finishPrepare() {
    const cpu0 = process.cpuUsage();
    const failures = {};
    for (const lane of state.cycle)
      for (const it of lane) {
        it.r1 = decodeResponseBody(unpad(await it.pre.sealed.openResponse(it.bytes1)));
        if (it.r1.op !== 'login-start' || it.r1.outcome !== 'ok') {
          failures[it.r1.outcome] = (failures[it.r1.outcome] ?? 0) + 1;
          it.skip = true;
          continue;
        }
        it.finish = opaque.client.finishLogin({ password: PASSWORD, clientLoginState: it.pre.start.clientLoginState, loginResponse: toBase64Url(it.r1.ke2), keyStretching: toSerenityKeyStretching(it.r1.ksf) });
        if (!it.finish) {
          failures['client-finish-failed'] = (failures['client-finish-failed'] ?? 0) + 1;
          it.skip = true;
          continue;
        }
        it.s2 = await sealRequest(state.fleetKey, it.a.account, 'login-finish', pad(encodeRequestBody({ op: 'login-finish', nonce: it.r1.nonce, ke3: fromBase64Url(it.finish.finishLoginRequest) })), { ephemeral: it.pre.ephemeral });
      }
    const cpu = process.cpuUsage(cpu0);
    return { failures, cpuMs: (cpu.user + cpu.system) / 1000 };
  },
  async finishes() {
    return timedSends(async (it) => {
      if (!it.skip) it.bytes2 = await it.a.send(it.s2.bytes);
    });
  },
  async verify() {
    const cpu0 = process.cpuUsage();
    const failures = {};
    let ok = 0;
    for (const lane of state.cycle)
      for (const it of lane) {
        if (it.skip) continue;
        const r2 = decodeResponseBody(unpad(await it.s2.openResponse(it.bytes2)));
        let outcome = r2.op !== 'login-finish' ? `answered ${r2.op}` : r2.outcome;
        if (outcome === 'ok') outcome = equalBytes(await unwrapBackupKey(fromBase64Url(it.finish.exportKey), it.a.account, await openRelease(fromBase64Url(it.finish.sessionKey), it.a.account, r2.releasedKey)), K) ? 'ok' : 'wrong-key';
        if (outcome === 'ok') ok++;
        else failures[outcome] = (failures[outcome] ?? 0) + 1;
      }
    state.cycle = null;
    const cpu = process.cpuUsage(cpu0);
    return { ok, failures, cpuMs: (cpu.user + cpu.system) / 1000 };
  },
  async run(msg) {
    const latencies = [];
    const failures = {};
    let live = 0;
    const cpu0 = process.cpuUsage();
    const deadline = msg.deadlineEpochMs;
    await Promise.all(
      state.lanes.map(async (lane) => {
        for (let i = 0; Date.now() < deadline; i++) {
          const a = lane[i % lane.length];
          let pre = a.pool.pop();
          if (!pre) {
            live++;
            pre = await precomputeOne(a.account);
          }
          const s = performance.now();
          const outcome = await recoverOnce(a.account, a.send, pre);
          if (outcome === 'ok') latencies.push(performance.now() - s);
          else failures[outcome] = (failures[outcome] ?? 0) + 1;
        }
      }),
    );
    const cpu = process.cpuUsage(cpu0);
    return { latencies, failures, live, cpuMs: (cpu.user + cpu.system) / 1000 };
  },
};

process.on('message', (msg) => {
  handlers[msg.type](msg).then(
    (result) => process.send({ type: msg.type, ok: true, ...result }),
    (err) => process.send({ type: msg.type, ok: false, error: String(err?.stack ?? err) }),
  );
});
process.send({ type: 'ready', ok: true });
