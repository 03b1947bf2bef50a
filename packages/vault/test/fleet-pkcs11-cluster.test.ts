/**
 * Issue 15: `npm run cluster -- --platform pkcs11` in small: three data centres (etcd +
 * coffer-vault on 127.0.0.1-3), each vault node on its own SoftHSM2 token created by the
 * cluster starter, the fleet keys moved between the tokens by the PKCS#11 ceremony.
 * Register through one DC, recover through the others, kill a DC, the other two serve.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toHex } from '@coffer/protocol';
import { fleetClient, startCluster, type Cluster } from './helpers/cluster.js';
import { describeIf, etcdSkip, softHsmSkip } from './helpers/requirements.js';

const skip = softHsmSkip() || etcdSkip();
const K = new Uint8Array(32).fill(9);

describeIf('fleet on three SoftHSM2 tokens (startCluster platform pkcs11)', skip, () => {
  let cluster: Cluster;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-pkcs11-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, platform: 'pkcs11', ports: { etcdClient: 25190, etcdPeer: 25191, vault: 25192 }, vaultEnv: { COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
  });
  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('each DC serves from its own token; a record made through one recovers through any; with a DC killed the other two serve', async () => {
    assert.deepEqual(cluster.tokens?.map((t) => t.tokenLabel), ['coffer-dc1', 'coffer-dc2', 'coffer-dc3']);
    for (const dc of cluster.dcs) {
      const log = readFileSync(join(dc.dir, 'vault.log'), 'utf8');
      assert.doesNotMatch(log, /NOT AN HSM|software platform/i, `${dc.name} must not run on the software platform`);
      const ceremony = readFileSync(join(dc.dir, 'vault', 'ceremony.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: string; platform: string });
      assert.equal(ceremony[0]!.platform, `pkcs11:coffer-dc${dc.index + 1}`);
      assert.deepEqual(ceremony.map((c) => c.step), dc.index === 0 ? ['init', 'export-for', 'export-for'] : ['join']);
    }
    for (let i = 0; i < 3; i++) {
      const account = `hsm-${i}`;
      assert.equal((await fleetClient(cluster, account, { prefer: i }).register('pw', K)).outcome, 'ok');
      for (let j = 0; j < 3; j++) {
        const r = await fleetClient(cluster, account, { prefer: j }).recover('pw');
        assert.ok(r.outcome === 'ok', `recover ${account} through dc${j + 1}: ${r.outcome}`);
        assert.equal(toHex(r.backupKey.expose()), toHex(K));
      }
    }
    await cluster.dcs[0]!.kill();
    for (const prefer of [1, 2]) {
      const r = await fleetClient(cluster, 'hsm-0', { prefer }).recover('pw');
      assert.ok(r.outcome === 'ok', `after dc1 died, recover through dc${prefer + 1}: ${r.outcome}`);
    }
    assert.equal((await fleetClient(cluster, 'hsm-late', { prefer: 1 }).register('pw', K)).outcome, 'ok');
    assert.equal((await fleetClient(cluster, 'hsm-late', { prefer: 2 }).recover('pw')).outcome, 'ok');
  });
});
