/**
 * Issue 9 on PKCS#11: the 3-node fleet with each node's anchor in its own SoftHSM2
 * token (CKO_DATA slots `coffer-anchor-v2`): all nodes restarted resume from their tokens'
 * anchors; etcd restored from a copy taken before 5 wrong guesses is refused
 * (store-rolled-back, alarm), never answered with 10 guesses.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fleetClient, fleetMetric, startCluster, type Cluster } from './helpers/cluster.js';
import { describeIf, etcdSkip, softHsmSkip } from './helpers/requirements.js';

const skip = softHsmSkip() || etcdSkip();
const K = new Uint8Array(32).fill(3);
const LIMIT = 10;
const PREFIX = 'coffer/vault/';
const b64 = (s: string): string => Buffer.from(s).toString('base64');

describeIf('fleet rollback protection on three SoftHSM2 tokens', skip, () => {
  let cluster: Cluster;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-rollback-pkcs11-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, platform: 'pkcs11', etcdTimeoutMs: 1000, ports: { etcdClient: 25090, etcdPeer: 25091, vault: 25092 }, vaultEnv: { COFFER_VAULT_GUESS_LIMIT: String(LIMIT), COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
  });
  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const etcd = (path: string, body: unknown): Promise<unknown> => cluster.etcd(cluster.dcs[0]!.etcdUrl, path, body, 5000);
  const all = async (): Promise<Array<{ key: string; value: string }>> =>
    ((await etcd('/v3/kv/range', { key: b64(PREFIX), range_end: b64(`${PREFIX.slice(0, -1)}0`) })) as { kvs?: Array<{ key: string; value?: string }> }).kvs?.map((k) => ({ key: k.key, value: k.value ?? '' })) ?? [];
  const isLeaderKey = (k: string): boolean => Buffer.from(k, 'base64').toString().startsWith(`${PREFIX}group/leader`);
  const wrong = async (account: string, prefer = 0): Promise<number | string> => {
    try {
      const r = await fleetClient(cluster, account, { prefer, deadlineMs: 8000 }).recover('wrong');
      return r.outcome === 'wrong-password' ? r.guessesRemaining : r.outcome;
    } catch (err) {
      return (err as Error).message;
    }
  };

  it('all nodes restarted resume from their tokens\' anchors; a restored etcd copy is refused, never 10 guesses', async () => {
    for (const dc of cluster.dcs) assert.doesNotMatch(readFileSync(join(dc.dir, 'vault.log'), 'utf8'), /software platform/i);
    assert.equal((await fleetClient(cluster, 'hsm-user').register('pw', K)).outcome, 'ok');
    assert.equal(await wrong('hsm-user'), LIMIT - 1);
    for (const d of cluster.dcs) await d.killVault();
    await Promise.all(cluster.dcs.map((d) => d.startVault()));
    assert.equal(await wrong('hsm-user', 1), LIMIT - 2, 'resumed with the count kept');

    const snapshot = (await all()).filter((kv) => !isLeaderKey(kv.key));
    for (let i = 0; i < 5; i++) assert.equal(await wrong('hsm-user', i % 3), LIMIT - 3 - i);
    const alarms = await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total');
    const keep = new Set(snapshot.map((k) => k.key));
    for (const kv of await all()) if (!keep.has(kv.key) && !isLeaderKey(kv.key)) await etcd('/v3/kv/deleterange', { key: kv.key });
    for (const kv of snapshot) await etcd('/v3/kv/put', { key: kv.key, value: kv.value });
    for (let i = 0; i < 10; i++) {
      const r = await wrong('hsm-user', i % 3);
      assert.equal(typeof r, 'string', `guess ${i} after the restore was answered (${r})`);
    }
    assert.ok((await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total')) > alarms);
  });
});
