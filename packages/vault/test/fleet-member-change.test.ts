/**
 * Review 2 (spec §13.11, docs/operations.md §7 "Replace a node's machine or token") on a
 * real 3-node fleet: member changes across a leader kill, and of the node that leads.
 *
 * 1. The leader is replaced (`fleet replace LEADER NEW`, NEW a new machine started and
 *    caught up first, as documented) and killed with kill -9 right after it appended the
 *    joint record (both lists), before finishing. To stop it exactly there the other two
 *    members' vault processes are paused (SIGSTOP) while it appends: the joint record
 *    cannot commit (the old list has no majority without them), the leader logs the
 *    change and is killed, then the two are resumed. The fleet must finish the change by
 *    itself (a new leader commits the joint record again, then the new list), the
 *    `fleet replace` still waiting must print the new list, running it again with the same
 *    IDs must report the change, not fail, and the account never gets more wrong-password
 *    answers than the limit, each one from the count before it.
 * 2. The node that leads then is replaced while it runs: it finishes its own replacement,
 *    steps down, and a member of the new list serves.
 * 3. A rejoining new machine whose challenge etcd lost (deleted while every member was
 *    paused) asks again under a new nonce and catches up; before, it waited for good
 *    (fail-before: the re-ask in fleet-group.ts #step and the re-answer in
 *    #answerChallenges disabled: "timed out waiting for … caught up").
 * 4. (own cluster) Finding 1, the etcd copy from before the member list: see preList().
 *
 * Fail-before: without the fix to `fleet replace` (a change that finished while the
 * operator waited is reported, fleet-cli.ts), step 1's second run fails with "… is not a
 * member"; without a new leader committing a joint record it finds (fleet-group.ts
 * #manageMembers, the `joint` branch) the change never finishes (the waiting command
 * times out): both were run disabled (see the review report).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VaultClient } from '@coffer/protocol';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { urlsClient, wrongGuessCounted, startCluster, until, vaultCommand, type Cluster, type DataCentre } from './helpers/cluster.js';
import { killMachines, spawnVault, startNewMachine, type VaultMachine } from './helpers/new-machine.js';
import { loadConfig } from '../src/server/config.js';
import { nodeKey } from '../src/server/fleet-ceremony.js';

const LIMIT = 10;
const K = new Uint8Array(32).fill(7);
const PREFIX = 'coffer/vault/';
const BASE = 26100;
const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** A vault node on a new machine (here: a new directory and port on a DC's host). */
type Machine = VaultMachine;

describeIf('fleet: member changes across a leader kill, and of the leader (spec §13.11, review 2)', etcdSkip(), () => {
  for (const part of ['changes', 'pre-list copy'] as const) describe(part, () => suite(part, part === 'changes' ? BASE : BASE + 30));
});

function suite(part: 'changes' | 'pre-list copy', base: number): void {
  let cluster: Cluster;
  let dir: string;
  const machines: Machine[] = [];
  const idOf = new Map<string, DataCentre>();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-member-change-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, etcdTimeoutMs: 1000, ports: { etcdClient: base, etcdPeer: base + 1, vault: base + 2 }, vaultEnv: { COFFER_VAULT_GUESS_LIMIT: String(LIMIT), COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
    for (const dc of cluster.dcs) idOf.set(await nodeIdOfDir(join(dc.dir, 'vault')), dc);
  });
  after(async () => {
    for (const dc of cluster?.dcs ?? []) {
      const pid = dc.vaultPid();
      if (pid) process.kill(pid, 'SIGCONT');
    }
    await killMachines(machines);
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const etcd = (path: string, body: unknown): Promise<unknown> => cluster.etcd(cluster.dcs[0]!.etcdUrl, path, body, 5000);
  const leaderId = async (): Promise<string | null> => {
    const kv = ((await etcd('/v3/kv/range', { key: b64(`${PREFIX}group/leader`) })) as { kvs?: Array<{ value?: string }> }).kvs?.[0];
    return kv?.value ? Buffer.from(kv.value, 'base64').toString() : null;
  };
  async function nodeIdOfDir(vaultDir: string): Promise<string> {
    return (await nodeKey(loadConfig({ env: { COFFER_VAULT_DATA_DIR: vaultDir } }))).nodeId;
  }
  const members = async (dc: DataCentre): Promise<{ members: string[] | null; previous: string[]; proposal: string | null }> => JSON.parse((await vaultCommand(dc, ['fleet', 'members'])).stdout);
  const urls = (): string[] => [...cluster.dcs.map((d) => d.vaultUrl), ...machines.map((m) => m.url)];

  /** A front end that knows every node, the new machines too: tries the next one on a 503 or a network error. */
  const client = (account: string, deadlineMs = 30_000): VaultClient => urlsClient(cluster, urls, account, deadlineMs);

  /** Every wrong-password answer the fleet gave for the account, in order (what an attacker learns). */
  const remaining: number[] = [];
  const wrongGuess = (account: string, deadlineMs = 30_000): Promise<string> => wrongGuessCounted(client, remaining, account, deadlineMs);

  /** The documented procedure's first half: a new machine for `dc`'s slot, keys from `source`, started, caught up. */
  async function newMachine(dc: DataCentre, source: DataCentre, port: number, ready: ((m: Machine) => Promise<boolean>) | null = null): Promise<Machine> {
    const m = await startNewMachine(cluster, dc, source, port);
    machines.push(m);
    await until(`the new machine ${m.id} ready`, 30_000, ready ? () => ready(m) : async () => /caught up from a majority's fresh evidence/.test(readFileSync(m.log, 'utf8')));
    return m;
  }
  /** kill -9 and start again on the same directory (its anchor kept). */
  async function restartMachine(m: Machine): Promise<void> {
    const exited = new Promise((r) => m.child.once('exit', r));
    m.child.kill('SIGKILL');
    await exited;
    m.child = spawnVault(m.env, m.log);
  }
  const logOf = (id: string): string => {
    const dc = idOf.get(id);
    if (dc) return readFileSync(join(dc.dir, 'vault.log'), 'utf8');
    const m = machines.find((x) => x.id === id);
    return m ? readFileSync(m.log, 'utf8') : '';
  };
  const warnings = (): string => [...idOf.keys(), ...machines.map((m) => m.id)].map((id) => `${id}:\n${logOf(id).split('\n').filter((l) => /"level":(40|50)/.test(l)).slice(-6).join('\n')}`).join('\n');

  if (part === 'pre-list copy') return preList();

  it('the leader is replaced and killed (kill -9) right after appending the joint record: the fleet finishes the change, and never answers more guesses than the limit', async () => {
    assert.equal((await client('vic', 40_000).register('pw', K)).outcome, 'ok');
    assert.equal(await wrongGuess('vic'), 'wrong-password');
    const dc0 = cluster.dcs[0]!;
    await until('the member list', 20_000, async () => ((await members(dc0)).members ?? []).length === 3);

    // An entry of the leader's term committed just now (it need not commit another first).
    assert.equal(await wrongGuess('vic'), 'wrong-password');
    const old = (await leaderId())!;
    const dcL = idOf.get(old)!;
    assert.ok(dcL, `the leader ${old} is one of the three`);
    const others = cluster.dcs.filter((d) => d !== dcL);
    const fresh = await newMachine(dcL, others[0]!, base + 10);

    // Freeze the two other members: the joint record can be appended, not committed.
    const before = logOf(old).length;
    for (const d of others) process.kill(d.vaultPid()!, 'SIGSTOP');
    const first = vaultCommand(others[0]!, ['fleet', 'replace', old, fresh.id]);
    await until('the leader appended the joint record', 20_000, async () => /replacing member/.test(logOf(old).slice(before)));
    const joint = await members(dc0);
    assert.ok(joint.previous.includes(old) && (joint.members ?? []).includes(fresh.id), `etcd holds the joint record: ${JSON.stringify(joint)}`);
    await dcL.killVault();
    for (const d of others) process.kill(d.vaultPid()!, 'SIGCONT');

    const r = await first;
    assert.equal(r.code, 0, `fleet replace (waiting across the kill): ${r.stderr}\n${warnings()}`);
    const done = JSON.parse(r.stdout) as { members: string[]; previous: string[] };
    assert.ok(done.members.includes(fresh.id) && !done.members.includes(old) && done.previous.length === 0, r.stdout);
    // Run again with the same IDs (the documented retry): it reports the change.
    const again = await vaultCommand(others[1]!, ['fleet', 'replace', old, fresh.id]);
    assert.equal(again.code, 0, `fleet replace again: ${again.stderr}`);
    assert.deepEqual(JSON.parse(again.stdout).members, done.members);

    assert.equal(await wrongGuess('vic'), 'wrong-password');
    assert.deepEqual(remaining, [LIMIT - 1, LIMIT - 2, LIMIT - 3], 'each answer from the count before it');
  });

  it('the node that leads is replaced while it runs: it finishes its own replacement, steps down, and the new list serves; the limit holds', async () => {
    const dc0 = cluster.dcs[0]!;
    const leader = (await leaderId())!;
    const now = await members(dc0);
    assert.ok(now.members!.includes(leader), `the leader ${leader} is a member: ${JSON.stringify(now)}`);
    const source = cluster.dcs.find((d) => d.vaultPid() !== null)!;
    const host = idOf.get(leader) ?? source;
    const fresh = await newMachine(host, source, base + 20);
    const r = await vaultCommand(source, ['fleet', 'replace', leader, fresh.id]);
    assert.equal(r.code, 0, `fleet replace: ${r.stderr}\n${warnings()}`);
    const list = JSON.parse(r.stdout).members as string[];
    assert.ok(list.includes(fresh.id) && !list.includes(leader), r.stdout);
    await until('the replaced leader stepped down', 20_000, async () => /no longer a member of the group/.test(logOf(leader)));
    await until('a member leads', 20_000, async () => list.includes((await leaderId()) ?? ''));

    // Spend the rest: LIMIT guesses answered in all (LIMIT - 1 wrong-password answers, each
    // one lower, and the last one's `locked`: the key erased), then nothing but `locked`.
    let outcome = 'wrong-password';
    for (let i = 0; i < LIMIT + 2 && outcome === 'wrong-password'; i++) outcome = await wrongGuess('vic');
    assert.deepEqual(remaining, Array.from({ length: LIMIT - 1 }, (_, i) => LIMIT - 1 - i), `answers: ${remaining.join(', ')}`);
    assert.equal(outcome, 'locked');
    assert.equal(await wrongGuess('vic'), 'locked');
  });

  it('a rejoin challenge that etcd lost (a copy restored, a key deleted) is asked again: the new machine still catches up', async () => {
    const challengeKey = (id: string) => `${PREFIX}group/challenge/${id}`;
    const shown = async (key: string) => (((await etcd('/v3/kv/range', { key: b64(key) })) as { kvs?: unknown[] }).kvs ?? []).length > 0;
    // Everyone who could answer paused, so the challenge stays unanswered until it is deleted.
    const paused = [...cluster.dcs.map((d) => d.vaultPid()), ...machines.map((m) => (m.child.exitCode === null ? m.child.pid! : null))].filter((p): p is number => p !== null);
    for (const pid of paused) process.kill(pid, 'SIGSTOP');
    let m: Machine;
    try {
      const source = cluster.dcs.find((d) => d.vaultPid() !== null)!;
      m = await newMachine(source, source, base + 26, async (x) => shown(challengeKey(x.id)));
      await etcd('/v3/kv/deleterange', { key: b64(challengeKey(m.id)) });
    } finally {
      for (const pid of paused) process.kill(pid, 'SIGCONT');
    }
    await until(`${m.id} caught up after its challenge was lost`, 20_000, async () => /caught up from a majority's fresh evidence/.test(readFileSync(m.log, 'utf8')));
  });

  /**
   * Finding 1: an etcd copy taken while one member is paused (two of three follow),
   * restored after the account's guesses were spent, with two identities from new key
   * ceremonies, each started on an empty etcd (the genesis, no evidence) and then shown
   * the copy. Before the fix the group recorded its list only once all three had acked an
   * entry of the leader's term, i.e. after requests: the copy was from before the list,
   * held the account with one guess counted, and the two new identities ("any two
   * identities") served it — 8, 7, 6 remaining after the fleet had answered all 10 (run
   * with `unlisted = false` and the empty bootstrap entry removed in fleet-group.ts). Now
   * the list is recorded at start (an empty entry) and no account is written before it:
   * the copy is from after the list, and the new identities count for nothing.
   */
  function preList(): void {
    it('an etcd copy taken with one member paused, restored with two identities from new key ceremonies (started on an empty etcd), answers no guess', async () => {
      const PFX_END = `${PREFIX.slice(0, -1)}0`;
      const range = async (key: string, end?: string): Promise<Array<{ key: string; value: string }>> =>
        ((await etcd('/v3/kv/range', { key: b64(key), ...(end ? { range_end: b64(end) } : {}) })) as { kvs?: Array<{ key: string; value?: string }> }).kvs?.map((k) => ({ key: k.key, value: k.value ?? '' })) ?? [];
      const wipe = () => etcd('/v3/kv/deleterange', { key: b64(PREFIX), range_end: b64(PFX_END) });
      const [dc0, dc1, dc2] = cluster.dcs as [DataCentre, DataCentre, DataCentre];
      process.kill(dc2.vaultPid()!, 'SIGSTOP');
      let early: string;
      try {
        early = (await client('eve', 15_000).register('pw', K)).outcome;
      } catch (err) {
        early = (err as Error).message;
      }
      if (early === 'ok') assert.equal(await wrongGuess('eve'), 'wrong-password');
      const copy = (await range(PREFIX, PFX_END)).filter((kv) => !Buffer.from(kv.key, 'base64').toString().startsWith(`${PREFIX}group/leader`));
      const head = Number(Buffer.from(copy.find((kv) => Buffer.from(kv.key, 'base64').toString() === `${PREFIX}loghead`)?.value ?? b64('0'), 'base64').toString());
      process.kill(dc2.vaultPid()!, 'SIGCONT');
      await until('the member list', 30_000, async () => ((await members(dc0)).members ?? []).length === 3);
      if (early !== 'ok') assert.equal((await client('eve').register('pw', K)).outcome, 'ok');
      let outcome = 'wrong-password';
      for (let i = 0; i < LIMIT + 2 && outcome === 'wrong-password'; i++) outcome = await wrongGuess('eve');
      assert.equal(outcome, 'locked');
      const spent = remaining.length;

      // The operator: the fleet down, etcd emptied, a new identity started on it (genesis), the copy put back; twice.
      for (const d of cluster.dcs) await d.killVault();
      const restore = async () => {
        await wipe();
        for (const kv of copy) await etcd('/v3/kv/put', { key: kv.key, value: kv.value });
      };
      const ackIndex = async (id: string): Promise<number> => {
        const kv = (await range(`${PREFIX}group/acks/${id}`))[0];
        return kv ? Number(Buffer.from(kv.value, 'base64').readBigUInt64BE(0)) : -1;
      };
      const fresh: Machine[] = [];
      for (const [dc, port] of [[dc0, base + 10], [dc1, base + 20]] as const) {
        await wipe();
        const m = await newMachine(dc, dc1, port, async (x) => (await ackIndex(x.id)) === 0);
        await restore();
        await until(`${m.id} followed the copy from entry 1`, 20_000, async () => (await ackIndex(m.id)) === head);
        fresh.push(m);
      }
      // The first one lost its view when etcd was emptied for the second (its rejoin
      // challenge went with it): started again, it resumes from its anchor on the copy.
      await restartMachine(fresh[0]!);
      await until('a new identity leads on the copy', 20_000, async () => fresh.map((m) => m.id).includes((await leaderId()) ?? ''));
      const answers: string[] = [];
      const end = Date.now() + 20_000;
      while (answers.filter((a) => !a.startsWith('vault answered') && !a.startsWith('fleet unavailable')).length < 3 && Date.now() < end) {
        try {
          answers.push(await wrongGuess('eve', 5_000));
        } catch (err) {
          answers.push((err as Error).message.slice(0, 300));
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      if (process.env.COFFER_TEST_VERBOSE) console.error({ early, head, answers, remaining }, warnings());
      assert.equal(remaining.length, spent, `wrong-password answers from the copy: ${remaining.slice(spent).join(', ')} (before the list: ${early}; outcomes ${answers.join(' | ')})`);
    });
  }
}
