// `node scripts/bench-vault-layers.mjs [--rounds N] [--accounts N] [--lanes N]` (after `npx tsc -b`)
// Where the vault's CPU per recovery goes, layer by layer, in ONE process with rounds
// interleaved (load from other processes falls on every layer alike; medians printed):
//   - opaque:   @serenity-kit/opaque server startLogin + finishLogin alone (the ceiling's work),
//               the same registered record shape, the setup passed as a string;
//   - envelope: the vault's two HPKE opens (one DH with the fleet key on the vault's platform
//               per recovery, kept for the login-finish; key schedules, AES-GCM) and two
//               response seals, nothing else;
//   - service:  VaultService.handle for login-start and login-finish — envelope, OPAQUE,
//               record open/seal, the rollback tree, the group commit (SQLite with its WAL
//               sync, the anchor write), metrics; no HTTP, no logging;
//   - inject:   the same through the Fastify app (`app.inject`: routing, body parsing, the
//               per-request log line at info to /dev/null, the reply) — light-my-request's
//               fake sockets cost more than node:http's, so inject − service bounds HTTP from above.
// A round of a layer: every account's login-start, LANES at a time, then every login-finish;
// client work (OPAQUE, sealing, opening) is done between the timed windows. Process CPU of
// all threads. The vault is the software platform on SQLite in a temporary directory.
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { pool, recoverAll, registerAll } from './vault-load.mjs';
import { argNumber } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 7);
const ACCOUNTS = argNumber('accounts', 256);
const LANES = argNumber('lanes', 32);
const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

const { loadConfig } = await import(join(root, 'packages/vault/dist/src/server/config.js'));
const { assembleVault } = await import(join(root, 'packages/vault/dist/src/server/start.js'));
const P = await import(join(root, 'packages/protocol/dist/src/index.js'));
await P.opaque.ready;
const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-vault-layers-'));
const config = loadConfig({ env: { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1', COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
const vault = await assembleVault(config, { createIfMissing: true, logger: { level: 'info', stream: createWriteStream('/dev/null') }, warn: () => {} });
try {
  const fleetKey = vault.fleet.fleetKey;
  const inject = (account, body) =>
    vault.app.inject({ method: 'POST', url: '/v1/request', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account }, payload: Buffer.from(body) }).then((r) => {
      if (r.statusCode !== 200) throw new Error(`HTTP ${r.statusCode} ${r.body}`);
      return new Uint8Array(r.rawPayload);
    });
  const direct = async (account, body) => {
    const r = await vault.service.handle(account, body);
    if (r.kind !== 'answer') throw new Error(`service: ${r.code}`);
    return r.decision.response;
  };
  const accounts = Array.from({ length: ACCOUNTS }, (_, i) => `bench-${i}`);
  await registerAll(P, fleetKey, accounts, inject);

  /** One recovery per account through `send`; the vault's CPU (µs per recovery) of both timed phases. */
  async function recoveries(send) {
    let cpu = 0;
    await recoverAll(P, fleetKey, accounts, LANES, send, async (_phase, run) => {
      const c = cpuUs();
      const r = await run();
      cpu += cpuUs() - c;
      return r;
    });
    return cpu / accounts.length;
  }

  // opaque: the ceiling's calls on a record registered here.
  const setup = P.opaque.server.createSetup();
  const ks = P.toSerenityKeyStretching(P.INSECURE_FAST_KSF_FOR_TESTING);
  const rs = P.opaque.client.startRegistration({ password: 'pw' });
  const { registrationResponse } = P.opaque.server.createRegistrationResponse({ serverSetup: setup, userIdentifier: 'u', registrationRequest: rs.registrationRequest });
  const { registrationRecord } = P.opaque.client.finishRegistration({ clientRegistrationState: rs.clientRegistrationState, registrationResponse, password: 'pw', keyStretching: ks });
  function opaqueOnly() {
    const cs = accounts.map(() => P.opaque.client.startLogin({ password: 'pw' }));
    let c = cpuUs();
    const ss = cs.map((x) => P.opaque.server.startLogin({ serverSetup: setup, userIdentifier: 'u', registrationRecord, startLoginRequest: x.startLoginRequest }));
    let cpu = cpuUs() - c;
    const fs = ss.map((x, i) => P.opaque.client.finishLogin({ clientLoginState: cs[i].clientLoginState, loginResponse: x.loginResponse, password: 'pw', keyStretching: ks }));
    c = cpuUs();
    for (const [i, x] of ss.entries()) P.opaque.server.finishLogin({ serverLoginState: x.serverLoginState, finishLoginRequest: fs[i].finishLoginRequest });
    cpu += cpuUs() - c;
    return cpu / accounts.length;
  }

  // envelope: two opens and two seals per recovery, as the service makes them since issue 13's
  // tenth round: the client seals both requests with one ephemeral (spec §3.2) and the
  // login-finish takes the login-start's DH (kept here in a Map, as core/dh-reuse.ts does), so
  // one DH on the vault's own platform per recovery. Every login-start, then every login-finish.
  // (Before, each request had its own ephemeral and DH: the layer counted one DH more than the
  // service makes, and service − opaque − envelope came out ~65 µs low.)
  const body = P.pad(P.encodeRequestBody({ op: 'login-finish', nonce: new Uint8Array(16), ke3: new Uint8Array(64) }));
  const platform = vault.platform.platform;
  async function envelopeOnly() {
    const ephemerals = await Promise.all(accounts.map(() => P.reusableEphemeral()));
    const starts = await Promise.all(accounts.map((a, i) => P.sealRequest(fleetKey, a, 'login-start', body, { ephemeral: ephemerals[i] })));
    const finishes = await Promise.all(accounts.map((a, i) => P.sealRequest(fleetKey, a, 'login-finish', body, { ephemeral: ephemerals[i] })));
    const responseBody = P.pad(new Uint8Array(10));
    const kept = new Map();
    const c = cpuUs();
    for (const phase of [starts, finishes]) {
      await pool(phase.map((s, i) => ({ s, account: accounts[i] })), LANES, async ({ s, account }) => {
        const header = P.parseRequest(s.bytes);
        const opened = await P.openRequest(header, account, fleetKey.publicKey, async (enc) => {
          const k = kept.get(account);
          if (k) {
            kept.delete(account);
            return k;
          }
          const dh = await platform.ecdh('coffer-fleet-hpke-v1', enc);
          kept.set(account, dh.slice());
          return dh;
        });
        await opened.sealResponse(responseBody, platform.randomBytes(32));
      });
    }
    if (kept.size !== 0) throw new Error('envelope layer: a login-finish did not take its DH');
    return (cpuUs() - c) / accounts.length;
  }

  const layers = { opaque: opaqueOnly, envelope: envelopeOnly, service: () => recoveries(direct), inject: () => recoveries(inject) };
  const results = Object.fromEntries(Object.keys(layers).map((k) => [k, []]));
  for (const f of Object.values(layers)) await f(); // warm-up
  for (let r = 0; r < ROUNDS; r++) for (const [k, f] of Object.entries(layers)) results[k].push(await f());
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log(`vault CPU per recovery by layer (software platform, SQLite, ${ACCOUNTS} accounts, ${LANES} concurrent, ${ROUNDS} interleaved rounds; µs, median [min–max]):`);
  for (const [k, xs] of Object.entries(results)) console.log(`  ${k.padEnd(9)} ${median(xs).toFixed(0).padStart(5)}  [${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}]`);
  const m = Object.fromEntries(Object.entries(results).map(([k, xs]) => [k, median(xs)]));
  console.log(`  service − opaque − envelope (record open/seal, rollback tree, SQLite and its sync, anchor, queues, metrics, GC): ${(m.service - m.opaque - m.envelope).toFixed(0)}`);
  console.log(`  inject − service (Fastify, body parsing, the log line, light-my-request): ${(m.inject - m.service).toFixed(0)}`);
} finally {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
}
