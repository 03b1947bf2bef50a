// Issue 8 §4: the fleet as `npm run cluster` runs it — etcd with mutual TLS for clients
// and peers and RBAC — serves recoveries, while a client with a valid certificate but
// no vault credentials can neither read old revisions nor write the vault's keys on any
// member, and the vault user cannot reach outside its prefix.
import { after, before, it } from 'node:test';
import { describeIf, etcdSkip } from './helpers/requirements.js';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fleetClient, startCluster, ETCD_VAULT_PREFIX, ETCD_VAULT_USER, type Cluster } from './helpers/cluster.js';
import { etcdPost } from './helpers/etcd-secure.js';
import { KEY_K } from './helpers/vault-harness.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

describeIf('fleet on etcd with mTLS and RBAC (npm run cluster)', etcdSkip(), () => {
  let dir: string;
  let cluster: Cluster;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-secure-'));
    cluster = await startCluster({ dir, secure: true, insecureFastKsf: true, ports: { etcdClient: 24490, etcdPeer: 24491, vault: 24492 } });
  });
  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves a registration and recoveries across data centres', async () => {
    assert.ok(cluster.dcs.every((d) => d.etcdUrl.startsWith('https://') && d.peerUrl.startsWith('https://')));
    assert.equal((await fleetClient(cluster, 'local:alice', { prefer: 0 }).register('correct horse battery', KEY_K)).outcome, 'ok');
    assert.equal((await fleetClient(cluster, 'local:alice', { prefer: 1 }).recover('wrong')).outcome, 'wrong-password');
    assert.equal((await fleetClient(cluster, 'local:alice', { prefer: 2 }).recover('correct horse battery')).outcome, 'ok');
  });

  it('on every member: no client certificate is refused; a certificate without the vault user cannot touch the vault keys', async () => {
    const pki = cluster.pki!;
    const key = b64(`${ETCD_VAULT_PREFIX}records/local:alice`);
    for (const dc of cluster.dcs) {
      await assert.rejects(etcdPost(dc.etcdUrl, '/v3/kv/range', { key }, { ca: pki.caFile }), /certificate|socket hang up|ECONNRESET/i);
      const withCert = { ca: pki.caFile, cert: pki.vaultCertFile, key: pki.vaultKeyFile };
      for (const [path, body] of [
        ['/v3/kv/range', { key, revision: '2' }],
        ['/v3/kv/put', { key, value: b64('rolled back') }],
        ['/v3/kv/deleterange', { key }],
      ] as const) {
        const r = await etcdPost(dc.etcdUrl, path, body, withCert);
        assert.equal(r.status, 403, `${dc.name} ${path}: ${JSON.stringify(r.json)}`);
      }
      const token = String((await etcdPost(dc.etcdUrl, '/v3/auth/authenticate', { name: ETCD_VAULT_USER, password: readFileSync(cluster.vaultPasswordFile!, 'utf8').trim() }, withCert)).json.token);
      assert.equal((await etcdPost(dc.etcdUrl, '/v3/kv/put', { key: b64('elsewhere/x'), value: b64('x') }, withCert, token)).status, 403, 'the vault role reaches only its prefix');
      assert.equal((await etcdPost(dc.etcdUrl, '/v3/auth/disable', {}, withCert, token)).status, 403, 'the vault user cannot turn auth off');
    }
    assert.equal((await fleetClient(cluster, 'local:alice').recover('correct horse battery')).outcome, 'ok', 'nothing was changed');
  });
}, { timeout: 180_000 });
