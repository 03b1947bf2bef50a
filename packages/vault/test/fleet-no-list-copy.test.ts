/**
 * The operator of etcd who holds the HSM PINs (so can run new key ceremonies sharing
 * K_log): session 30's third fleet review, kept as tests.
 *
 * 1. After the member list is recorded, an etcd copy taken while the account still had
 * guesses left is restored after the fleet spent them all — STRIPPED of the member record
 * (`records/\x00members` and every `group/members/<digest>`) — and shown to two identities
 * from new key ceremonies (started on an empty etcd: the genesis, NO_MEMBERS). They follow
 * it from entry 1 but their tree still holds the list's digest (the log's change digests,
 * not etcd's records, fix it), so they never fall to the no-list path: no guess answered.
 *
 * 2. The reserved `\x00members` record is reached neither through the account header
 * (raw HTTP with a NUL, and its printable look-alikes) nor through a forged sweep-index
 * entry naming it.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VaultClient } from '@coffer/protocol';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { urlsClient, wrongGuessCounted, startCluster, until, vaultCommand, type Cluster, type DataCentre } from './helpers/cluster.js';
import { killMachines, startNewMachine, type VaultMachine } from './helpers/new-machine.js';

const LIMIT = 10;
const K = new Uint8Array(32).fill(7);
const PREFIX = 'coffer/vault/';
const PFX_END = `${PREFIX.slice(0, -1)}0`;
const BASE = 26200;
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const unb64 = (s: string): string => Buffer.from(s, 'base64').toString();


describeIf('fleet: the no-list path and the reserved member record, played by the etcd operator', etcdSkip(), () => {
  let cluster: Cluster;
  let dir: string;
  const machines: VaultMachine[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-review3-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, etcdTimeoutMs: 1000, ports: { etcdClient: BASE, etcdPeer: BASE + 1, vault: BASE + 2 }, vaultEnv: { COFFER_VAULT_GUESS_LIMIT: String(LIMIT), COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
  });
  after(async () => {
    await killMachines(machines);
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const etcd = (path: string, body: unknown): Promise<unknown> => cluster.etcd(cluster.dcs[0]!.etcdUrl, path, body, 5000);
  const range = async (key: string, end?: string): Promise<Array<{ key: string; value: string }>> =>
    ((await etcd('/v3/kv/range', { key: b64(key), ...(end ? { range_end: b64(end) } : {}) })) as { kvs?: Array<{ key: string; value?: string }> }).kvs?.map((k) => ({ key: k.key, value: k.value ?? '' })) ?? [];
  const wipe = () => etcd('/v3/kv/deleterange', { key: b64(PREFIX), range_end: b64(PFX_END) });
  const members = async (dc: DataCentre): Promise<{ members: string[] | null }> => JSON.parse((await vaultCommand(dc, ['fleet', 'members'])).stdout);
  const urls = (): string[] => [...cluster.dcs.map((d) => d.vaultUrl), ...machines.map((m) => m.url)];
  const ackIndex = async (id: string): Promise<number> => {
    const kv = (await range(`${PREFIX}group/acks/${id}`))[0];
    return kv ? Number(Buffer.from(kv.value, 'base64').readBigUInt64BE(0)) : -1;
  };

  const client = (account: string, deadlineMs = 30_000): VaultClient => urlsClient(cluster, urls, account, deadlineMs);
  const remaining: number[] = [];
  const wrongGuess = (account: string, deadlineMs = 30_000): Promise<string> => wrongGuessCounted(client, remaining, account, deadlineMs);

  /** A new key ceremony (fleet join with the shared keys, K_log included), started on whatever etcd shows now. */
  async function newMachine(dc: DataCentre, port: number): Promise<VaultMachine> {
    const m = await startNewMachine(cluster, dc, dc, port, 'vault-r3');
    machines.push(m);
    return m;
  }

  /** One raw HTTP/1.1 request (bytes as given: a NUL in a header is not refused client-side). */
  function raw(port: number, head: string, body: Buffer): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1');
      let out = '';
      s.on('data', (d) => (out += d.toString('latin1')));
      s.on('end', () => resolve(out));
      s.on('error', reject);
      s.setTimeout(5000, () => s.destroy(new Error('timeout')));
      s.end(Buffer.concat([Buffer.from(head, 'latin1'), body]));
    });
  }

  it('no request reaches records/\\x00members: a NUL in coffer-account, its look-alikes, a forged sweep entry', async () => {
    const dc0 = cluster.dcs[0]!;
    await until('the member list', 30_000, async () => ((await members(dc0)).members ?? []).length === 3);
    const listBefore = (await range(`${PREFIX}records/\u0000members`))[0]?.value;
    assert.ok(listBefore, 'the list is recorded');
    const headBefore = unb64((await range(`${PREFIX}loghead`))[0]!.value);
    const port = Number(new URL(dc0.vaultUrl).port);
    const body = Buffer.alloc(64);
    const statusOf = (r: string) => Number(r.split(' ')[1]);
    for (const name of ['\u0000members', '%00members', '\\x00members', '\\u0000members', ' members']) {
      const r = await raw(port, `POST /v1/request HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncoffer-account: ${name}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`, body);
      // The NUL: refused before any handler (Node's parser / ACCOUNT_ID_PATTERN). The printable
      // look-alikes are other, valid account names (records/%00members, …): a garbage body is
      // refused (400 bad-length, or 503 not-leader on a follower) and never names the reserved key.
      if (name.includes('\u0000')) assert.equal(statusOf(r), 400, `${JSON.stringify(name)}: ${r.slice(0, 120)}`);
      else assert.ok(statusOf(r) === 400 || statusOf(r) === 503, `${JSON.stringify(name)}: ${r.slice(0, 120)}`);
    }
    // The sweeper: a sweep-index entry naming the reserved record, due now.
    const sweepKey = `${PREFIX}sweeps/${'0'.repeat(15)}/\u0000members`;
    await etcd('/v3/kv/put', { key: b64(sweepKey), value: '' });
    const logs = () => cluster.dcs.map((d) => readFileSync(join(d.dir, 'vault.log'), 'utf8')).join('\n');
    await until('the sweeper dropped the forged entry', 30_000, async () => (await range(sweepKey)).length === 0);
    assert.match(logs(), /names no valid account/);
    assert.equal((await range(`${PREFIX}records/\u0000members`))[0]?.value, listBefore, 'the member record unchanged');
    assert.equal(unb64((await range(`${PREFIX}loghead`))[0]!.value), headBefore, 'no entry written by any of it');
  });

  it('a copy from after the list, stripped of the member record, shown to two new-ceremony identities from the genesis: no guess answered', async () => {
    const [dc0, dc1] = cluster.dcs as [DataCentre, DataCentre, DataCentre];
    assert.equal((await client('eve', 40_000).register('pw', K)).outcome, 'ok');
    assert.equal(await wrongGuess('eve'), 'wrong-password');
    // The operator's copy: eve has LIMIT - 1 guesses left in it.
    const copy = (await range(PREFIX, PFX_END)).filter((kv) => !unb64(kv.key).startsWith(`${PREFIX}group/`) && unb64(kv.key) !== `${PREFIX}records/\u0000members`);
    const head = Number(unb64(copy.find((kv) => unb64(kv.key) === `${PREFIX}loghead`)!.value));
    assert.ok(!copy.some((kv) => unb64(kv.key).includes('\u0000members')), 'the copy holds no member record');
    let outcome = 'wrong-password';
    for (let i = 0; i < LIMIT + 2 && outcome === 'wrong-password'; i++) outcome = await wrongGuess('eve');
    assert.equal(outcome, 'locked');
    const spent = remaining.length;

    for (const d of cluster.dcs) await d.killVault();
    // An empty etcd whose leader key names nobody (no lease): the two new identities start
    // at the genesis and only follow (neither campaigns, so neither appends an entry of its own).
    const bogusLeader = () => etcd('/v3/kv/put', { key: b64(`${PREFIX}group/leader`), value: b64('ffffffffffffffff') });
    await wipe();
    await bogusLeader();
    const x = await newMachine(dc0, BASE + 10);
    const y = await newMachine(dc1, BASE + 20);
    await until('both new identities at the genesis', 30_000, async () => (await ackIndex(x.id)) === 0 && (await ackIndex(y.id)) === 0);
    // The stripped copy put in (the genesis identities' group/ keys kept).
    for (const kv of copy) await etcd('/v3/kv/put', { key: kv.key, value: kv.value });
    // Both follow the stripped copy from entry 1 (what the attack needs of them).
    try {
      await until('both new identities followed the copy', 30_000, async () => (await ackIndex(x.id)) === head && (await ackIndex(y.id)) === head);
    } catch (err) {
      const logs = machines.map((m) => `${m.id}:\n` + readFileSync(m.log, 'utf8').split('\n').filter((l) => /"level":(30|40|50)/.test(l)).map((l) => l.slice(0, 300)).join('\n')).join('\n');
      throw new Error(`${(err as Error).message} (head ${head}; acks ${await ackIndex(x.id)}, ${await ackIndex(y.id)})\n${logs}`, { cause: err });
    }

    // Now they may campaign (the leader key gone).
    await etcd('/v3/kv/deleterange', { key: b64(`${PREFIX}group/leader`) });
    const answers: string[] = [];
    const end = Date.now() + 15_000;
    while (Date.now() < end && answers.length < 3) {
      try {
        answers.push(await wrongGuess('eve', 4_000));
      } catch (err) {
        answers.push((err as Error).message.slice(0, 200));
      }
    }
    const logs = machines.map((m) => readFileSync(m.log, 'utf8')).join('\n');
    assert.equal(remaining.length, spent, `wrong-password answers from the copy: ${remaining.slice(spent).join(', ')} (outcomes ${answers.join(' | ')})`);
    assert.ok(!/"msg":"fleet group: leading/.test(logs), 'no new identity leads');
    assert.ok(!answers.includes('wrong-password') && !answers.includes('locked'), answers.join(' | '));
  });
});
