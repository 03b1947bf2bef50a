/**
 * A follower's ack that reaches the fleet leader before the leader's own anchor write
 * finished (the follower witnessed the entry straight from etcd's watch) must still count
 * at once (spec §13.7): it was dropped before, so the batch waited for the next full pass
 * (up to a second under load: the p99 tail of bench:fleet). Here the leader waits for a
 * majority's acks before every capture (COFFER_VAULT_ACKS_BEFORE_CAPTURE_FOR_TESTING), and
 * full passes come only once a minute, so every answer depends on the early acks being kept.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { fleetClient, startCluster, type Cluster } from './helpers/cluster.js';

const LIMIT = 10;
const K = new Uint8Array(32).fill(5);

describeIf('fleet: acks ahead of the leader\'s capture', etcdSkip(), () => {
  let cluster: Cluster;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-early-ack-'));
    cluster = await startCluster({
      dir,
      insecureFastKsf: true,
      etcdTimeoutMs: 1000,
      ports: { etcdClient: 25290, etcdPeer: 25291, vault: 25292 },
      vaultEnv: { COFFER_VAULT_GUESS_LIMIT: String(LIMIT), COFFER_VAULT_ACKS_BEFORE_CAPTURE_FOR_TESTING: '1', COFFER_VAULT_FULL_PASS_MS_FOR_TESTING: '60000' },
    });
  });
  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every batch whose acks arrive before the leader captured it is answered (not held until a full pass or the 5 s commit timeout)', async () => {
    assert.equal((await fleetClient(cluster, 'early', { deadlineMs: 20_000 }).register('pw', K)).outcome, 'ok');
    for (let i = 1; i <= 3; i++) {
      const r = await fleetClient(cluster, 'early', { deadlineMs: 20_000 }).recover('not the password');
      assert.equal(r.outcome, 'wrong-password');
      assert.equal(r.outcome === 'wrong-password' ? r.guessesRemaining : -1, LIMIT - i);
    }
    const r = await fleetClient(cluster, 'early', { deadlineMs: 20_000 }).recover('pw');
    assert.equal(r.outcome, 'ok');
  });
});
