/**
 * Issue 9: a fleet that ran before rollback protection (records in etcd, no log, no
 * anchors) is upgraded by starting every node once with COFFER_VAULT_ADOPT_LOG_HEAD=1
 * (docs/operations.md §4.2); without it the nodes refuse the unlogged store.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fleetClient, startCluster, type Cluster } from './helpers/cluster.js';
import { describeIf, etcdSkip } from './helpers/requirements.js';

const K = new Uint8Array(32).fill(4);

describeIf('upgrading an unprotected etcd fleet to rollback protection', etcdSkip(), () => {
  let cluster: Cluster;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-upgrade-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, etcdTimeoutMs: 1000, ports: { etcdClient: 24790, etcdPeer: 24791, vault: 24792 }, vaultEnv: { COFFER_VAULT_LOGINS_PER_WINDOW: '64', COFFER_VAULT_INSECURE_NO_ROLLBACK_PROTECTION_FOR_TESTING: '1' } });
  });
  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const recover = async (account: string, deadlineMs = 20_000): Promise<string> => {
    try {
      return (await fleetClient(cluster, account, { deadlineMs }).recover('pw')).outcome;
    } catch (err) {
      return (err as Error).message;
    }
  };

  it('refused without the decision; adopted with it on every node; protected afterwards', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await fleetClient(cluster, `old-${i}`, { prefer: i }).register('pw', K)).outcome, 'ok');
    const on = { COFFER_VAULT_INSECURE_NO_ROLLBACK_PROTECTION_FOR_TESTING: '0' };
    for (const d of cluster.dcs) await d.killVault();
    await Promise.all(cluster.dcs.map((d) => d.startVault(on)));
    assert.match(await recover('old-0', 5000), /store-rolled-back|fleet unavailable/, 'no anchor, records without a log: refused');
    for (const d of cluster.dcs) await d.killVault();
    await Promise.all(cluster.dcs.map((d) => d.startVault({ ...on, COFFER_VAULT_ADOPT_LOG_HEAD: '1' })));
    for (let i = 0; i < 3; i++) assert.equal(await recover(`old-${i}`), 'ok');
    for (const d of cluster.dcs) await d.killVault();
    await Promise.all(cluster.dcs.map((d) => d.startVault(on)));
    for (let i = 0; i < 3; i++) assert.equal(await recover(`old-${i}`), 'ok', 'protected, resumed from the anchors');
    assert.equal((await fleetClient(cluster, 'new').register('pw', K)).outcome, 'ok');
  });
});
