// `node scripts/bench-vault-envelope.mjs [OTHER_ROOT…] [--rounds N] [--messages N]` (after `npx tsc -b`)
// CPU per vault request of the HPKE envelope without its Diffie-Hellman: parse, the key
// schedule, the AES-GCM open, the response key derivation and seal (what the vault does per
// request around `Platform.ecdh`), with the node:crypto provider the vault installs, for this
// build and other builds (each OTHER_ROOT a built copy of the repository), rounds
// interleaved, the DH outputs computed beforehand. Medians and the per-round ratio printed.
import { createECDH } from 'node:crypto';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argNumber, positionalArgs } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 9);
const MESSAGES = argNumber('messages', 1500);
const roots = [root, ...positionalArgs()];
const fleet = createECDH('prime256v1');
fleet.generateKeys();
const builds = [];
for (const r of roots) {
  const P = await import(join(r, 'packages/protocol/dist/src/index.js'));
  const { nodeCryptoProvider } = await import(join(r, 'packages/protocol/dist/src/node/node-crypto.js'));
  P.useCryptoProvider(nodeCryptoProvider); // this build's own module graph, as its vault does
  const fleetKey = await P.fleetKeyFromPublicKey(new Uint8Array(fleet.getPublicKey()));
  const body = P.pad(P.encodeRequestBody({ op: 'login-finish', nonce: new Uint8Array(16), ke3: new Uint8Array(64) }));
  const sealed = await Promise.all(Array.from({ length: MESSAGES }, () => P.sealRequest(fleetKey, 'bench-account', 'login-finish', body)));
  const dh = new Map(sealed.map((s) => [s.bytes, new Uint8Array(fleet.computeSecret(P.parseRequest(s.bytes).enc))]));
  builds.push({ root: r, P, fleetKey, sealed, dh, responseBody: P.pad(new Uint8Array(10)), rounds: [] });
}
const responseNonce = new Uint8Array(32);
for (let r = 0; r <= ROUNDS; r++) {
  for (const b of builds) {
    const c = process.cpuUsage();
    for (const s of b.sealed) {
      const opened = await b.P.openRequest(b.P.parseRequest(s.bytes), 'bench-account', b.fleetKey.publicKey, async () => b.dh.get(s.bytes));
      await opened.sealResponse(b.responseBody, responseNonce);
    }
    const u = process.cpuUsage(c);
    if (r > 0) b.rounds.push((u.user + u.system) / MESSAGES); // round 0: warm-up
  }
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
console.log(`HPKE envelope per request without the DH (node:crypto provider; ${MESSAGES} messages per round, ${ROUNDS} interleaved rounds; µs):`);
for (const b of builds) console.log(`  ${b.root}: median ${median(b.rounds).toFixed(1)}  rounds ${b.rounds.map((x) => x.toFixed(0)).join(' ')}`);
for (const b of builds.slice(1)) {
  const per = builds[0].rounds.map((x, i) => x / b.rounds[i]);
  console.log(`  ${builds[0].root} / ${b.root}, per round: median ${median(per).toFixed(3)} (rounds ${per.map((x) => x.toFixed(3)).join(' ')})`);
}
