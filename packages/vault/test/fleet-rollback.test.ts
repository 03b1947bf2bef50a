/**
 * Issue 9 / spec §13.6–§13.9 on a real 3-node fleet (3 etcd members, 3 vault nodes,
 * software platform): one leader appends, a majority captures before any answer, and
 * the operator who controls etcd can deny service but not roll guesses back.
 *
 * The cases run in order on one cluster; the destructive ones (the store rolled back)
 * come last.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { INSECURE_FAST_KSF_FOR_TESTING, VaultClient } from '@coffer/protocol';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { etcdAdmin, fleetClient, fleetMetric, startCluster, until, wrongGuessOn, vaultCommand, type Cluster, type DataCentre } from './helpers/cluster.js';
import { loadConfig } from '../src/server/config.js';
import { exportFor, join as joinFleet, nodeKey } from '../src/server/fleet-ceremony.js';

const LIMIT = 10;
const K = new Uint8Array(32).fill(7);
const PREFIX = 'coffer/vault/';
const b64 = (s: string): string => Buffer.from(s).toString('base64');

describeIf('fleet rollback protection (3 nodes, real etcd)', etcdSkip(), () => {
  let cluster: Cluster;
  let dir: string;
  const ids = new Map<string, number>(); // node ID → DC index

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-rollback-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, etcdTimeoutMs: 1000, ports: { etcdClient: 24990, etcdPeer: 24991, vault: 24992 }, vaultEnv: { COFFER_VAULT_GUESS_LIMIT: String(LIMIT), COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
    for (const dc of cluster.dcs) ids.set((await nodeKey(loadConfig({ env: { COFFER_VAULT_DATA_DIR: join(dc.dir, 'vault') } }))).nodeId, dc.index);
  });
  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const { etcd, range } = etcdAdmin(() => cluster);

  /** The DC whose vault node leads the group (from `group/leader` in etcd), once one serves. */
  async function vaultLeader(): Promise<DataCentre> {
    let found: DataCentre | null = null;
    await until('a vault leader', 30_000, async () => {
      const kv = (await range(`${PREFIX}group/leader`))[0];
      if (!kv) return false;
      const i = ids.get(Buffer.from(kv.value, 'base64').toString('utf8'));
      if (i === undefined || !cluster.dcs[i]!.vaultPid()) return false;
      found = cluster.dcs[i]!;
      return true;
    });
    return found!;
  }

  /** A wrong guess through the fleet: its guessesRemaining, or the failure's text. */
  /** A client of one node alone (no front end, no retry); `answer` turns each HTTP response into the reply or throws. */
  function nodeClient(dc: DataCentre, account: string, answer: (res: Response) => Promise<Uint8Array>): VaultClient {
    return new VaultClient({
      fleetKey: cluster.fleetKey,
      account,
      ksf: INSECURE_FAST_KSF_FOR_TESTING,
      transport: async (bytes) => answer(await fetch(`${dc.vaultUrl}/v1/request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account }, body: bytes })),
    });
  }

  const wrongGuess = (account: string, prefer = 0): Promise<number | string> => wrongGuessOn(cluster, account, prefer);

  /** A wrong guess once the fleet serves again (members that refused the store resume when it is put right). */
  async function answeredGuess(account: string): Promise<number> {
    let r: number | string = '';
    await until(`an answer for ${account}`, 30_000, async () => typeof (r = await wrongGuess(account)) === 'number');
    return Number(r);
  }

  it('one node leads; the others answer 503 not-leader naming it, and a front end\'s retry reaches the leader', async () => {
    assert.equal((await fleetClient(cluster, 'alice').register('pw', K)).outcome, 'ok');
    const leader = await vaultLeader();
    const follower = cluster.dcs[(leader.index + 1) % 3]!;
    let status = 0;
    let body = '';
    let named: string | null = null;
    const direct = nodeClient(follower, 'alice', async (res) => {
      status = res.status;
      named = res.headers.get('coffer-vault-leader');
      body = await res.text();
      throw new Error('refused');
    });
    await assert.rejects(direct.recover('pw'));
    assert.equal(status, 503);
    assert.match(body, /"not-leader"/);
    assert.equal(ids.get(named ?? ''), leader.index, 'the header names the leader');
    assert.equal((await fleetClient(cluster, 'alice', { prefer: follower.index }).recover('pw')).outcome, 'ok');
  });

  it('followers stalled (SIGSTOP): the leader appends the guess to etcd but answers nothing; acks forged by the operator do not release it; the guess stays counted', async () => {
    assert.equal((await fleetClient(cluster, 'stall').register('pw', K)).outcome, 'ok');
    assert.equal(await wrongGuess('stall'), LIMIT - 1);
    const leader = await vaultLeader();
    const [a, b] = cluster.dcs.filter((d) => d !== leader) as [DataCentre, DataCentre];
    const idOf = (d: DataCentre): string => [...ids].find(([, i]) => i === d.index)![0];
    const head = async (): Promise<number> => Number(Buffer.from((await range(`${PREFIX}loghead`))[0]?.value ?? '', 'base64').toString('utf8'));
    const before = await head();
    const statuses: number[] = [];
    const direct = nodeClient(leader, 'stall', async (res) => {
      statuses.push(res.status);
      if (res.status !== 200) throw new Error(`HTTP ${res.status} ${await res.text()}`);
      return new Uint8Array(await res.arrayBuffer());
    });
    for (const d of [a, b]) process.kill(d.vaultPid()!, 'SIGSTOP');
    try {
      let outcome: string | null = null;
      const guess = direct.recover('not the password').then(
        (r) => (outcome = `answered: ${r.outcome}`),
        (err: Error) => (outcome = err.message),
      );
      await until('the guess\'s entry is in etcd', 10_000, async () => (await head()) > before);
      // The operator (who holds etcd) writes acks: A's real (older) ack under B's name, and
      // for A a statement naming the new entry, index and MAC copied from the log in etcd,
      // with A's old proof (the proof MAC, under the HSMs' log key, does not cover them).
      const ackA = Buffer.from((await range(`${PREFIX}group/acks/${idOf(a)}`))[0]!.value, 'base64');
      const newest = await head();
      const entry = Buffer.from((await range(`${PREFIX}log/${String(newest).padStart(20, '0')}`))[0]!.value, 'base64');
      const bumped = Buffer.from(ackA);
      bumped.writeBigUInt64BE(BigInt(newest), 0);
      entry.copy(bumped, 8, 88, 120);
      await etcd('/v3/kv/put', { key: b64(`${PREFIX}group/acks/${idOf(b)}`), value: ackA.toString('base64') });
      await etcd('/v3/kv/put', { key: b64(`${PREFIX}group/acks/${idOf(a)}`), value: bumped.toString('base64') });
      await guess;
      // One request, refused: KE2 never left (with a released KE2 the client would have sent KE3).
      assert.deepEqual(statuses, [503], 'the leader gave up on the batch (no majority)');
      assert.match(String(outcome), /HTTP 503 .*store-unavailable/, 'no answer was released for an entry a majority had not captured');
    } finally {
      for (const d of [a, b]) process.kill(d.vaultPid()!, 'SIGCONT');
    }
    // The entry was committed in etcd: once the followers capture it, the guess counts (never answered).
    assert.equal(await answeredGuess('stall'), LIMIT - 3);
  });

  it('the leader killed -9 between append and commit: no guess answered twice, none lost', async () => {
    assert.equal((await fleetClient(cluster, 'kill').register('pw', K)).outcome, 'ok');
    const seen: number[] = [];
    for (let i = 0; i < 2; i++) seen.push((await wrongGuess('kill')) as number);
    assert.deepEqual(seen, [LIMIT - 1, LIMIT - 2]);
    // Make the node that will crash the leader: the others down, it alone campaigns; then
    // they come back (as followers) so it has its majority.
    const old = await vaultLeader();
    const crash = cluster.dcs[(old.index + 1) % 3]!;
    const others = cluster.dcs.filter((d) => d !== crash);
    for (const d of others) await d.killVault();
    await crash.killVault();
    await crash.startVault({ COFFER_VAULT_INSECURE_CRASH_BEFORE_CAPTURE_FOR_TESTING: '1' });
    await until('the crashing node holds the leader key', 20_000, async () => {
      const kv = (await range(`${PREFIX}group/leader`))[0];
      return !!kv && ids.get(Buffer.from(kv.value, 'base64').toString('utf8')) === crash.index;
    });
    for (const d of others) await d.startVault();
    // The guess reaches the crashing leader only: it counts, commits in etcd, dies before
    // its anchor write and before any ack: nothing is answered.
    const viaCrash = new VaultClient({
      fleetKey: cluster.fleetKey,
      account: 'kill',
      ksf: INSECURE_FAST_KSF_FOR_TESTING,
      transport: async (bytes) => {
        for (;;) {
          const res = await fetch(`${crash.vaultUrl}/v1/request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'coffer-account': 'kill' }, body: bytes });
          if (res.status === 503) {
            await sleep(200); // still taking over
            continue;
          }
          assert.equal(res.status, 200, await res.text());
          return new Uint8Array(await res.arrayBuffer());
        }
      },
    });
    await assert.rejects(viaCrash.recover('not the password'), 'the crashed leader answered nothing');
    await until('the crashing node died', 10_000, async () => crash.vaultPid() === null);
    // The next guess gets one try (a retried one could be counted twice): let another node
    // take the leader key first (the dead one's 2 s lease runs out), so that its 8 s are
    // not spent waiting for a leader on a loaded machine.
    await until('another node holds the leader key', 30_000, async () => {
      const kv = (await range(`${PREFIX}group/leader`))[0];
      const holder = kv ? ids.get(Buffer.from(kv.value, 'base64').toString('utf8')) : undefined;
      return holder !== undefined && holder !== crash.index;
    });
    // Another node takes over, finds the entry in etcd and continues the chain: the guess
    // is counted (one guess lost by the user, never answered), and never answered twice.
    const next = await wrongGuess('kill');
    assert.equal(next, LIMIT - 4, 'the crashed guess is counted exactly once, the next one after it');
    await crash.startVault();
    assert.equal(await wrongGuess('kill', crash.index), LIMIT - 5);
  });

  it('all vault nodes restarted resume from their anchors and serve, with every count kept', async () => {
    for (const d of cluster.dcs) await d.killVault();
    // (A node that started after the group's first entry rejoined from evidence once, at
    // the cluster's start: only what the restarted nodes log counts here.)
    const before = cluster.dcs.map((d) => readFileSync(join(d.dir, 'vault.log'), 'utf8').length);
    await Promise.all(cluster.dcs.map((d) => d.startVault()));
    assert.equal((await fleetClient(cluster, 'alice').recover('pw')).outcome, 'ok');
    assert.equal(await wrongGuess('kill'), LIMIT - 6);
    // No node needed the group's evidence to resume: each anchor was enough.
    for (const d of cluster.dcs) assert.doesNotMatch(readFileSync(join(d.dir, 'vault.log'), 'utf8').slice(before[d.index]), /caught up from a majority/);
  });

  it('a node with a lost anchor rejoins from the majority\'s fresh evidence and counts toward commits without weakening any count', async () => {
    const leader = await vaultLeader();
    const lost = cluster.dcs[(leader.index + 1) % 3]!;
    const third = cluster.dcs[(leader.index + 2) % 3]!;
    await lost.killVault();
    const anchor = join(lost.dir, 'vault', 'software-keys.json.anchor');
    assert.ok(existsSync(anchor));
    rmSync(anchor);
    assert.equal(await wrongGuess('kill'), LIMIT - 7, 'served by the other two meanwhile');
    const logged = readFileSync(join(lost.dir, 'vault.log'), 'utf8').length;
    await lost.startVault();
    await until('the node rejoined', 20_000, async () => /caught up from a majority's fresh evidence/.test(readFileSync(join(lost.dir, 'vault.log'), 'utf8').slice(logged)));
    // Now the rejoined node is needed for every commit: the third is down.
    await third.killVault();
    assert.equal(await wrongGuess('kill'), LIMIT - 8);
    await third.startVault();
    // And it can lead: the leader's node goes down, the group continues from its anchors.
    await leader.killVault();
    assert.equal(await wrongGuess('kill'), LIMIT - 9);
    await leader.startVault();
  });

  it('a new machine (vault directory wiped: no keys, no anchor, no fleet file) joins through the key ceremony, catches up from the majority and counts toward commits', async () => {
    assert.equal((await fleetClient(cluster, 'newmachine').register('pw', K)).outcome, 'ok');
    assert.equal(await wrongGuess('newmachine'), LIMIT - 1);
    const leader = await vaultLeader();
    const fresh = cluster.dcs[(leader.index + 1) % 3]!;
    const third = cluster.dcs[(leader.index + 2) % 3]!;
    await fresh.killVault();
    const freshDir = join(fresh.dir, 'vault');
    rmSync(freshDir, { recursive: true, force: true });
    mkdirSync(freshDir, { recursive: true });
    assert.equal(await wrongGuess('newmachine'), LIMIT - 2, 'served by the other two meanwhile');
    // The ceremony (fleet-ceremony.ts): the new machine makes its transport key, the
    // leader's node exports the fleet keys wrapped to it, the new machine imports them.
    const freshConfig = loadConfig({ env: { COFFER_VAULT_DATA_DIR: freshDir } });
    const node = await nodeKey(freshConfig);
    const pkg = await exportFor(loadConfig({ env: { COFFER_VAULT_DATA_DIR: join(leader.dir, 'vault') } }), Buffer.from(node.publicKey, 'hex'));
    await joinFleet(freshConfig, JSON.stringify(pkg), Buffer.from(cluster.fleetKey.keyId).toString('hex'));
    const oldId = [...ids].find(([, dc]) => dc === fresh.index)![0];
    ids.set(node.nodeId, fresh.index);
    const logged = readFileSync(join(fresh.dir, 'vault.log'), 'utf8').length;
    await fresh.startVault();
    await until('the new machine caught up', 20_000, async () => /caught up from a majority's fresh evidence/.test(readFileSync(join(fresh.dir, 'vault.log'), 'utf8').slice(logged)));
    // The new identity becomes a member in place of the old one (spec §13.11).
    const r = await vaultCommand(leader, ['fleet', 'replace', oldId, node.nodeId]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).members, [...ids.keys()].filter((id) => id !== oldId).sort());
    // With the third node down, every commit needs the new machine: counts go on from
    // where the group was, never back to a fresh 10.
    await third.killVault();
    assert.equal(await wrongGuess('newmachine'), LIMIT - 3);
    await third.startVault();
    assert.equal((await fleetClient(cluster, 'newmachine').recover('pw')).outcome, 'ok');
  });

  it('an old record value, an older log entry written over the newest, a deleted entry: refused; the real state serves again', async () => {
    assert.equal((await fleetClient(cluster, 'bob').register('pw', K)).outcome, 'ok');
    const key = `${PREFIX}records/bob`;
    const before1 = (await range(key))[0]!;
    assert.equal(await wrongGuess('bob'), LIMIT - 1);
    const current = (await range(key))[0]!;
    const alarms0 = await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total');
    await etcd('/v3/kv/put', { key: b64(key), value: before1.value });
    const r = await wrongGuess('bob');
    assert.equal(typeof r, 'string', `not answered: ${r}`);
    assert.match(String(r), /store-rolled-back/);
    assert.ok((await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total')) > alarms0, 'metric counts the refusal');
    await etcd('/v3/kv/put', { key: b64(key), value: current.value });
    assert.equal(await wrongGuess('bob'), LIMIT - 2);

    // The log: the newest entry replaced by an older one, then deleted. Followers refuse
    // to follow it; nothing commits, nothing is answered; put back, all serves again.
    const log = await range(`${PREFIX}log/`, `${PREFIX}log0`);
    const newest = log.at(-1)!;
    const alarms1 = await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total');
    await etcd('/v3/kv/put', { key: newest.key, value: log.at(-2)!.value });
    await until('followers refuse the edited log', 10_000, async () => (await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total')) > alarms1);
    await etcd('/v3/kv/put', { key: newest.key, value: newest.value });
    assert.equal(await answeredGuess('bob'), LIMIT - 3);
    const log2 = await range(`${PREFIX}log/`, `${PREFIX}log0`);
    const head = log2.at(-1)!;
    const alarms2 = await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total');
    await etcd('/v3/kv/deleterange', { key: head.key });
    await until('followers refuse the truncated log', 10_000, async () => (await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total')) > alarms2);
    const during = await wrongGuess('bob');
    assert.equal(typeof during, 'string', `nothing answered while the log is truncated: ${during}`);
    await etcd('/v3/kv/put', { key: head.key, value: head.value });
    assert.equal(await answeredGuess('bob'), LIMIT - 4, 'the refused attempts counted nothing');
  });

  it('etcd restored from a copy taken before 5 wrong guesses: store-rolled-back with an alarm, never 10 guesses; restarts do not help', async () => {
    assert.equal((await fleetClient(cluster, 'carol').register('pw', K)).outcome, 'ok');
    const snapshot = (await range(PREFIX, `${PREFIX.slice(0, -1)}0`)).filter((kv) => !Buffer.from(kv.key, 'base64').toString().startsWith(`${PREFIX}group/leader`));
    let answered = 0;
    for (let i = 0; i < 5; i++) if (typeof (await wrongGuess('carol')) === 'number') answered++;
    assert.equal(answered, 5);
    const alarms = await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total');
    // The restore: every key of the prefix as it was (newer ones deleted), except the
    // lease-bound leader key, which a restore cannot bring back with its lease.
    const now = await range(PREFIX, `${PREFIX.slice(0, -1)}0`);
    const keep = new Set(snapshot.map((k) => k.key));
    for (const kv of now) if (!keep.has(kv.key) && !Buffer.from(kv.key, 'base64').toString().startsWith(`${PREFIX}group/leader`)) await etcd('/v3/kv/deleterange', { key: kv.key });
    for (const kv of snapshot) await etcd('/v3/kv/put', { key: kv.key, value: kv.value });
    for (let i = 0; i < 10; i++) {
      const r = await wrongGuess('carol', i % 3);
      assert.equal(typeof r, 'string', `guess ${i} after the restore was answered (${r})`);
    }
    assert.ok((await fleetMetric(cluster, 'coffer_vault_rollbacks_detected_total')) > alarms, 'coffer_vault_rollbacks_detected_total counts it');
    const logs = cluster.dcs.map((d) => readFileSync(join(d.dir, 'vault.log'), 'utf8')).join('\n');
    assert.match(logs, /ALARM: rollback protection refuses the store|ALARM: a record does not match/);
    // Restarting every node does not make the restored store acceptable.
    for (const d of cluster.dcs) await d.killVault();
    await Promise.all(cluster.dcs.map((d) => d.startVault()));
    for (let i = 0; i < 3; i++) assert.equal(typeof (await wrongGuess('carol', i)), 'string');
  });
});
