/**
 * The operator as attacker (spec §13.8, §13.11): a group of N = 3 whose members are
 * replaced through the key ceremony, every ceremony making a new node ID. Before the
 * member list was bound, the commit rule and the takeover evidence counted any node ID
 * whose ack or answer verified under `coffer-log-mac-v1`, so old HSMs kept after a
 * replacement were extra votes.
 *
 * The attack: two members are replaced through the documented procedure (docs/operations.md
 * §4.2: a new machine, `fleet join`, `fleet replace`), but their old HSMs (here: their
 * untouched vault directories, moved aside — no anchor is copied or rewritten) are kept,
 * frozen at what they captured. The fleet, now of the three current identities, counts 8
 * more wrong guesses. The operator then puts etcd back to a copy and starts the two old
 * HSMs on it: two identities out of N = 3. Two copies are tried, each on its own fleet:
 * one taken after the replacements (the old HSMs' anchors are in its log, the member
 * list there names the new machines), and one taken before the first replacement (the
 * list there names the old HSMs; one of them captured the first replacement).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { etcdAdmin, fleetClient, startCluster, until, wrongGuessOn, vaultCommand, type Cluster, type DataCentre } from './helpers/cluster.js';
import { loadConfig } from '../src/server/config.js';
import { exportFor, join as joinFleet, nodeKey } from '../src/server/fleet-ceremony.js';

const LIMIT = 10;
const K = new Uint8Array(32).fill(7);
const PREFIX = 'coffer/vault/';
const b64 = (s: string): string => Buffer.from(s).toString('base64');

describeIf('fleet: identities beyond N (members replaced through the ceremony, old HSMs kept)', etcdSkip(), () => {
  for (const [copyWhen, base] of [['after', 25590], ['before', 25690]] as const) {
    describe(`etcd put back to a copy taken ${copyWhen} the replacements`, () => {
      let cluster: Cluster;
      let dir: string;

      before(async () => {
        dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-extra-identity-'));
        cluster = await startCluster({ dir, insecureFastKsf: true, etcdTimeoutMs: 1000, ports: { etcdClient: base, etcdPeer: base + 1, vault: base + 2 }, vaultEnv: { COFFER_VAULT_GUESS_LIMIT: String(LIMIT), COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
      });
      after(async () => {
        await cluster?.stop();
        rmSync(dir, { recursive: true, force: true });
      });

      const { etcd, range } = etcdAdmin(() => cluster);
      /** Everything under the prefix but the lease-bound leader key. */
      const copyEtcd = async () => (await range(PREFIX, `${PREFIX.slice(0, -1)}0`)).filter((kv) => !Buffer.from(kv.key, 'base64').toString().startsWith(`${PREFIX}group/leader`));
      const nodeIdOf = async (dc: DataCentre) => (await nodeKey(loadConfig({ env: { COFFER_VAULT_DATA_DIR: join(dc.dir, 'vault') } }))).nodeId;

      const wrongGuess = (account: string, prefer = 0): Promise<number | string> => wrongGuessOn(cluster, account, prefer);

      /** The documented replacement of `dc`'s machine (a new one, keys from `source`); its old vault directory is kept at `<dc>/old-hsm`. */
      async function replace(dc: DataCentre, source: DataCentre): Promise<void> {
        const oldId = await nodeIdOf(dc);
        await dc.killVault();
        const vaultDir = join(dc.dir, 'vault');
        renameSync(vaultDir, join(dc.dir, 'old-hsm'));
        mkdirSync(vaultDir, { recursive: true });
        const config = loadConfig({ env: { COFFER_VAULT_DATA_DIR: vaultDir } });
        const node = await nodeKey(config);
        const pkg = await exportFor(loadConfig({ env: { COFFER_VAULT_DATA_DIR: join(source.dir, 'vault') } }), Buffer.from(node.publicKey, 'hex'));
        await joinFleet(config, JSON.stringify(pkg), Buffer.from(cluster.fleetKey.keyId).toString('hex'));
        const before = readFileSync(join(dc.dir, 'vault.log'), 'utf8').length;
        await dc.startVault();
        await until(`${dc.name}'s new machine caught up`, 20_000, async () => /caught up from a majority's fresh evidence/.test(readFileSync(join(dc.dir, 'vault.log'), 'utf8').slice(before)));
        const r = await vaultCommand(source, ['fleet', 'replace', oldId, node.nodeId]);
        const logs = () => cluster.dcs.map((d) => `${d.name}:\n${readFileSync(join(d.dir, 'vault.log'), 'utf8').split('\n').filter((l) => /"level":(40|50)/.test(l)).slice(-8).join('\n')}`).join('\n');
        assert.equal(r.code, 0, `fleet replace: ${r.stderr}\n${logs()}`);
        const members = JSON.parse(r.stdout).members as string[];
        assert.ok(members.includes(node.nodeId) && !members.includes(oldId), r.stdout);
      }

      it('a bad proposal (garbage, a non-member, a node that does not follow) changes nothing and the group keeps serving', { skip: copyWhen === 'before' ? 'once is enough' : false }, async () => {
        assert.equal((await fleetClient(cluster, 'mallory').register('pw', K)).outcome, 'ok');
        assert.equal(await wrongGuess('mallory'), LIMIT - 1);
        const dc0 = cluster.dcs[0]!;
        await until('the member list', 20_000, async () => (JSON.parse((await vaultCommand(dc0, ['fleet', 'members'])).stdout || '{}').members ?? []).length === 3);
        const { members } = JSON.parse((await vaultCommand(dc0, ['fleet', 'members'])).stdout) as { members: string[] };
        for (const [args, says] of [
          [['nothex', members[0]!], /two different node IDs/],
          [[members[0]!, members[0]!], /two different node IDs/],
          [[members[0]!], /two different node IDs/],
          [['00000000000000aa', '00000000000000bb'], /00000000000000aa is not a member/],
          [[members[0]!, members[1]!], /is a member already/],
        ] as const) {
          const r = await vaultCommand(dc0, ['fleet', 'replace', ...args]);
          assert.notEqual(r.code, 0, `fleet replace ${args.join(' ')}`);
          assert.match(r.stderr, says);
        }
        // Straight into etcd (the operator): garbage, then a member replaced by a node that holds no log key.
        const proposal = `${PREFIX}group/proposal`;
        let left = LIMIT - 1;
        for (const value of ['replace zzz', Buffer.from([0xff, 0, 1]).toString('latin1'), `replace ${members[0]} 00000000000000cc`]) {
          await etcd('/v3/kv/put', { key: b64(proposal), value: Buffer.from(value, 'latin1').toString('base64') });
          assert.equal(await wrongGuess('mallory'), --left, `served with ${JSON.stringify(value)} proposed`);
        }
        const after = JSON.parse((await vaultCommand(dc0, ['fleet', 'members'])).stdout) as { members: string[]; proposal: string };
        assert.deepEqual(after.members, members, 'the list is unchanged');
        assert.equal(after.proposal, `replace ${members[0]} 00000000000000cc`, 'a proposal the leader cannot take yet stays');
        const logs = cluster.dcs.map((d) => readFileSync(join(d.dir, 'vault.log'), 'utf8')).join('\n');
        assert.match(logs, /refusing the member change proposed in etcd/);
        assert.match(logs, /does not follow the log yet/);
        await etcd('/v3/kv/deleterange', { key: b64(proposal) });
      });

      it('two old HSMs and the etcd copy never serve a count older than the fleet\'s', async () => {
        assert.equal((await fleetClient(cluster, 'eve').register('pw', K)).outcome, 'ok');
        assert.equal(await wrongGuess('eve'), LIMIT - 1);
        const [dc0, dc1, dc2] = cluster.dcs as [DataCentre, DataCentre, DataCentre];
        // The group records its members once all three follow (spec §13.11).
        await until('the member list', 20_000, async () => (JSON.parse((await vaultCommand(dc0, ['fleet', 'members'])).stdout || '{}').members ?? []).length === 3);
        let copy = copyWhen === 'before' ? await copyEtcd() : null;
        await replace(dc1, dc0);
        await replace(dc2, dc0);
        copy ??= await copyEtcd();
        for (let i = 0; i < LIMIT - 2; i++) assert.equal(await wrongGuess('eve'), LIMIT - 2 - i);
        // The operator: every current node down, etcd put back to the copy, the old HSMs back in.
        for (const d of cluster.dcs) await d.killVault();
        const now = await range(PREFIX, `${PREFIX.slice(0, -1)}0`);
        const keep = new Set(copy.map((k) => k.key));
        for (const kv of now) if (!keep.has(kv.key)) await etcd('/v3/kv/deleterange', { key: kv.key });
        for (const kv of copy) await etcd('/v3/kv/put', { key: kv.key, value: kv.value });
        for (const d of [dc1, dc2]) {
          rmSync(join(d.dir, 'vault'), { recursive: true, force: true });
          renameSync(join(d.dir, 'old-hsm'), join(d.dir, 'vault'));
          await d.startVault();
        }
        // One guess was left; the fleet must never answer from the old count (LIMIT - 1 left).
        const answers: Array<number | string> = [];
        for (let i = 0; i < 3; i++) answers.push(await wrongGuess('eve', 1 + (i % 2)));
        assert.ok(!answers.some((a) => typeof a === 'number' && a > 0), `answered from a rolled-back count: ${answers.join(', ')}`);
      });
    });
  }
});
