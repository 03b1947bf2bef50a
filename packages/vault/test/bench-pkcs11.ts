// Micro-benchmark of the PKCS#11 platform on a throwaway SoftHSM2 token: ops/s of
// seal, unseal, mac and ecdh for pool sizes 1 and 4, blocking and threaded calls.
// Not a test (no *.test.ts). Run after building:
//   npx tsc -b packages/vault && node packages/vault/dist/test/bench-pkcs11.js [seconds-per-case]
import { performance } from 'node:perf_hooks';
import { createECDH } from 'node:crypto';
import { openPkcs11Platform, provisionPkcs11Keys } from '../src/platform/pkcs11/index.js';
import type { Pkcs11Platform } from '../src/platform/pkcs11/index.js';
import { createSoftHsmToken, softHsmAvailable } from './helpers/softhsm.js';

const SECONDS = Number(process.argv[2] ?? 1);
const IN_FLIGHT = 32;
const PAYLOAD = 100;

if (!softHsmAvailable()) {
  process.stderr.write('bench-pkcs11: error: SoftHSM2 is not installed\n');
  process.exit(1);
}

const token = createSoftHsmToken({ label: 'coffer-bench' });
await provisionPkcs11Keys(token.options, { seal: ['bench-seal'], mac: ['bench-mac'], ecdh: ['bench-ecdh'] });

/** Runs `op` with IN_FLIGHT callers for SECONDS; ops/s and main-thread busy fraction. */
async function measure(op: () => Promise<unknown>): Promise<{ rate: number; elu: number }> {
  const end = performance.now() + SECONDS * 1000;
  let done = 0;
  const elu0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (performance.now() < end) {
        await op();
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  return { rate: done / elapsed, elu: performance.eventLoopUtilization(elu0).utilization };
}

const aad = new TextEncoder().encode('user:bench|v1');
const payload = new Uint8Array(PAYLOAD).fill(7);
const peer = createECDH('prime256v1');
peer.generateKeys();
const peerPublic = Uint8Array.from(peer.getPublicKey());

const rows: string[] = [];
process.stdout.write(`PKCS#11 platform on SoftHSM2, ${PAYLOAD}-byte payloads, ${IN_FLIGHT} in flight, ${SECONDS}s per case\n`);
process.stdout.write('calls     pool  op      ops/s    event-loop busy\n');
for (const calls of ['blocking', 'threaded'] as const) {
  for (const poolSize of [1, 4]) {
    const platform: Pkcs11Platform = await openPkcs11Platform({ ...token.options, poolSize, calls });
    const sealed = await platform.seal('bench-seal', aad, payload);
    const ops: [string, () => Promise<unknown>][] = [
      ['seal', () => platform.seal('bench-seal', aad, payload)],
      ['unseal', () => platform.unseal('bench-seal', aad, sealed)],
      ['mac', () => platform.mac('bench-mac', payload)],
      ['ecdh', () => platform.ecdh('bench-ecdh', peerPublic)],
    ];
    for (const [name, op] of ops) {
      await op(); // warm the key-handle cache
      const { rate, elu } = await measure(op);
      const line = `${calls.padEnd(9)} ${String(poolSize).padStart(4)}  ${name.padEnd(6)} ${Math.round(rate).toString().padStart(7)}    ${(elu * 100).toFixed(0)}%`;
      process.stdout.write(line + '\n');
      rows.push(`bench: pkcs11-${name} calls=${calls} pool=${poolSize} ops_per_s=${Math.round(rate)}`);
    }
    await platform.close();
  }
}
process.stdout.write(rows.join('\n') + '\n');
token.cleanup();
