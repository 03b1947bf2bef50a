// 200 concurrent wrong guesses over real HTTP connections: never more than the limit is
// counted (TESTING.md "Vault"). A SQLite store is served by exactly one vault process
// (a one-node group with rollback protection, spec §13), so the guesses race on one
// node's connections; the cross-node race is the etcd fleet tests' (fleet-quorum).
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { INSECURE_FAST_KSF_FOR_TESTING, VaultClient, type FleetKey } from '@coffer/protocol';
import { assembleVault, type RunningVault } from '../src/server/start.js';
import { testConfig } from './helpers/vault-harness.js';

/** One fresh TCP connection per request (agent: false), as many clients would make. */
function post(url: string, account: string, body: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/v1/request`, { method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream', 'coffer-account': account, 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(new Uint8Array(Buffer.concat(chunks))) : reject(new Error(`HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString()}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('concurrent guessing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-vault-conc-'));
  const nodes: RunningVault[] = [];
  const urls: string[] = [];
  let fleetKey: FleetKey;
  const LIMIT = 10;
  before(async () => {
    const config = testConfig(dir, { policy: { guessLimit: LIMIT, loginsPerWindow: 64 } });
    nodes.push(await assembleVault(config, { createIfMissing: true, warn: () => {} }));
    for (const n of nodes) urls.push(await n.app.listen({ host: '127.0.0.1', port: 0 }));
    fleetKey = nodes[0]!.fleet.fleetKey;
  });
  after(async () => {
    for (const n of nodes) await n.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const client = (i: number) => new VaultClient({ fleetKey, account: 'target', ksf: INSECURE_FAST_KSF_FOR_TESTING, transport: (b) => post(urls[i % urls.length]!, 'target', b) });

  it('counts exactly the limit from 200 concurrent wrong guesses, then refuses the right password', async () => {
    assert.equal((await client(0).register('the right one', new Uint8Array(32).fill(1))).outcome, 'ok');
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => client(i).recover(`wrong ${i}`)));
    const tally: Record<string, number> = {};
    for (const r of results) tally[r.outcome] = (tally[r.outcome] ?? 0) + 1;
    assert.equal(tally.ok, undefined, JSON.stringify(tally));
    let counted = 0;
    let conflicts = 0;
    for (const n of nodes) {
      counted += Number((await n.metrics.guessesCounted.get()).values[0]?.value ?? 0);
      conflicts += Number((await n.metrics.storeConflicts.get()).values[0]?.value ?? 0);
    }
    assert.equal(counted, LIMIT, `guesses counted (${JSON.stringify(tally)}, ${conflicts} CAS conflicts)`);
    // Only the newest login of an account can be finished, so racing clients see their
    // abandon answered `superseded` (or `stale`); the rest are told to wait (`rate-limited`) or `locked`.
    for (const k of Object.keys(tally)) assert.ok(['wrong-password', 'locked', 'rate-limited', 'stale', 'superseded'].includes(k), JSON.stringify(tally));
    assert.equal((await client(1).recover('the right one')).outcome, 'locked');
    assert.equal((await client(0).status()).outcome, 'locked');
  });
});
