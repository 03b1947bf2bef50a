// The bare-OPAQUE ceiling for scripts/bench-vault.mjs (forked, never run by hand): one
// Node process, pinned by the parent to the vault's core, like the vault itself.
//
// A window runs batches of B logins until its deadline: B client startLogin (untimed),
// B server startLogin back to back (timed), B client finishLogin (untimed), B server
// finishLogin back to back (timed). Timed = this process's CPU time (process.cpuUsage:
// all threads, as /proc/<pid>/stat counts the vault's), so time spent waiting for the
// core while the shared machine runs other work does not count against the library.
// The server calls are exactly the vault's: `serverSetup` as a string (serenity-kit
// decodes it on every call, the vault too), a registered record, the bench KSF.
import { performance } from 'node:perf_hooks';

const { protocolPath } = JSON.parse(process.env.COFFER_BENCH_CEILING);
const { opaque, INSECURE_FAST_KSF_FOR_TESTING, toSerenityKeyStretching } = await import(protocolPath);
await opaque.ready;

const B = 50;
const setup = opaque.server.createSetup();
const ks = toSerenityKeyStretching(INSECURE_FAST_KSF_FOR_TESTING);
const userIdentifier = 'coffer-bench-ceiling-account';
const rs = opaque.client.startRegistration({ password: 'pw' });
const { registrationResponse } = opaque.server.createRegistrationResponse({ serverSetup: setup, userIdentifier, registrationRequest: rs.registrationRequest });
const { registrationRecord } = opaque.client.finishRegistration({ clientRegistrationState: rs.clientRegistrationState, registrationResponse, password: 'pw', keyStretching: ks });
const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

function window(seconds) {
  let cpu = 0;
  let wall = 0;
  let n = 0;
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const c = Array.from({ length: B }, () => opaque.client.startLogin({ password: 'pw' }));
    let t = performance.now();
    let u = cpuUs();
    const s = c.map((x) => opaque.server.startLogin({ serverSetup: setup, userIdentifier, registrationRecord, startLoginRequest: x.startLoginRequest }));
    cpu += cpuUs() - u;
    wall += performance.now() - t;
    const f = s.map((x, i) => opaque.client.finishLogin({ clientLoginState: c[i].clientLoginState, loginResponse: x.loginResponse, password: 'pw', keyStretching: ks }));
    t = performance.now();
    u = cpuUs();
    const done = s.map((x, i) => opaque.server.finishLogin({ serverLoginState: x.serverLoginState, finishLoginRequest: f[i].finishLoginRequest }));
    cpu += cpuUs() - u;
    wall += performance.now() - t;
    if (done.some((d) => !d.sessionKey)) throw new Error('ceiling: a login did not finish');
    n += B;
  }
  return { n, cpuSeconds: cpu / 1e6, wallSeconds: wall / 1000 };
}

window(0.5); // warm-up (JIT, WASM tiers): not reported
process.on('message', (msg) => {
  try {
    process.send({ type: msg.type, ok: true, ...window(msg.seconds) });
  } catch (err) {
    process.send({ type: msg.type, ok: false, error: String(err?.stack ?? err) });
  }
});
process.send({ type: 'ready', ok: true });
