/**
 * TESTING.md "Fleet": a whole data centre (its etcd member and vault node) killed with
 * -9 under a load of registrations, recoveries and wrong guesses; then brought back.
 * Real processes: three etcd members and three coffer-vault nodes on 127.0.0.1-3.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { fleetClient, startCluster, until, waitCaughtUp, type Cluster } from './helpers/cluster.js';
import { loadConfig } from '../src/server/config.js';
import { nodeKey } from '../src/server/fleet-ceremony.js';

const LIMIT = 10;
const key = (i: number): Uint8Array => new Uint8Array(32).fill(i % 251);

/**
 * A real client's loop: retry a flow that ended `stale` (its first attempt committed but
 * the answer was lost) or `superseded` (a transport retry of login-start on another node
 * started a newer login of the account, which replaced this one).
 */
const RETRY = ['stale', 'superseded'];
async function register(c: Cluster, account: string, prefer: number): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const r = await fleetClient(c, account, { prefer }).register('correct horse', key(account.length + prefer));
    // `already-registered` after a `stale`: the first register-finish committed.
    if (r.outcome === 'ok' || r.outcome === 'already-registered') return;
    assert.ok(RETRY.includes(r.outcome), `register ${account}: ${r.outcome}`);
  }
  throw new Error(`register ${account}: still stale`);
}

/** Recovers `account`, trying DC `prefer` first; returns the DCs whose answers were 200. */
async function recoverOk(c: Cluster, account: string, prefer: number): Promise<number[]> {
  const answeredBy: number[] = [];
  const onAttempt = ({ dc, status }: { dc: number; status: number | null }) => void (status === 200 && answeredBy.push(dc));
  for (let i = 0; i < 5; i++) {
    const r = await fleetClient(c, account, { prefer, onAttempt }).recover('correct horse');
    if (r.outcome === 'ok') return answeredBy;
    assert.ok(RETRY.includes(r.outcome), `recover ${account}: ${r.outcome}`);
  }
  throw new Error(`recover ${account}: still stale`);
}

describeIf('fleet: a whole data centre killed under load', etcdSkip(), () => {
  let cluster: Cluster;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-outage-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, ports: { etcdClient: 24190, etcdPeer: 24191, vault: 24192 }, vaultEnv: { COFFER_VAULT_GUESS_LIMIT: String(LIMIT), COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
  });
  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('loses no record, allows no extra guess, serves through the survivors, and the DC catches up', async (t) => {
    const registered = new Set<string>();
    const early = Array.from({ length: 12 }, (_, i) => `early-${i}`);
    await Promise.all(early.map(async (a, i) => {
      await register(cluster, a, i % 3);
      registered.add(a);
    }));
    const guessed = ['guessed-0', 'guessed-1'];
    for (const a of guessed) await register(cluster, a, 0);

    // The DC to kill: the etcd leader's, the hardest case.
    const victim = (await cluster.leader()) ?? 1;
    const wrongAnswers = new Map(guessed.map((a) => [a, 0]));
    let stop = false;
    // Progress counters: the kill and the end of the outage wait on these, not on time.
    let registrations = 0;
    let recoveries = 0;
    let guesses = 0;
    let progressed: (() => void) | undefined;
    const tick = () => progressed?.();
    const waitFor = async (what: string, cond: () => boolean) => {
      const deadline = Date.now() + 120_000; // a hang, not slowness, ends here
      while (!cond()) {
        if (Date.now() > deadline) throw new Error(`no progress: ${what}`);
        await new Promise<void>((r) => {
          progressed = r;
          setTimeout(r, 1000);
        });
      }
    };
    const workers: Promise<void>[] = [];
    // Registrations and recoveries, each worker preferring a different DC.
    for (let w = 0; w < 4; w++) {
      workers.push((async () => {
        for (let j = 0; !stop; j++) {
          const fresh = `w${w}-${j}`;
          await register(cluster, fresh, (w + j) % 3);
          registered.add(fresh);
          registrations++;
          tick();
          await recoverOk(cluster, early[(w * 7 + j) % early.length]!, (w + j + 1) % 3);
          recoveries++;
          tick();
        }
      })());
    }
    // Wrong guesses against two accounts through every node.
    for (let w = 0; w < 3; w++) {
      workers.push((async () => {
        for (let j = 0; !stop; j++) {
          const a = guessed[j % guessed.length]!;
          const r = await fleetClient(cluster, a, { prefer: (w + j) % 3 }).recover(`wrong ${w}-${j}`);
          if (r.outcome === 'wrong-password') wrongAnswers.set(a, wrongAnswers.get(a)! + 1);
          else assert.ok(['locked', 'stale', 'superseded', 'rate-limited'].includes(r.outcome), r.outcome);
          guesses++;
          tick();
        }
      })());
    }
    // Kill once the load is under way in every kind of worker.
    await waitFor('load before the kill', () => registrations >= 8 && recoveries >= 4 && guesses >= 6);
    await cluster.dcs[victim]!.kill();
    const at = { registrations, recoveries, guesses };
    // The outage lasts until the survivors have served a fair amount of each kind of flow.
    await waitFor('service through the survivors', () => registrations >= at.registrations + 12 && recoveries >= at.recoveries + 8 && guesses >= at.guesses + 6);
    stop = true;
    await Promise.all(workers);
    t.diagnostic(`during the outage: ${registrations - at.registrations} registrations, ${recoveries - at.recoveries} recoveries, ${guesses - at.guesses} wrong guesses`);

    for (const [a, n] of wrongAnswers) assert.ok(n <= LIMIT, `${a}: ${n} wrong guesses answered, limit ${LIMIT}`);
    for (const a of guessed) {
      const r = await fleetClient(cluster, a).recover('correct horse');
      // Either the limit was reached (locked) or fewer guesses were made and it still opens.
      if (wrongAnswers.get(a)! >= LIMIT) assert.equal(r.outcome, 'locked');
      else assert.ok(r.outcome === 'ok' || r.outcome === 'locked', r.outcome);
    }

    // The DC comes back and catches up; every registered account recovers through it.
    await cluster.dcs[victim]!.restart();
    await waitCaughtUp(cluster);
    // Its vault node catches up: it follows the log, captures it in its anchor and acks
    // the head (spec §13.7). (With rollback protection only the group's leader answers;
    // the restarted node is a follower that counts toward every commit from now on.)
    const victimId = (await nodeKey(loadConfig({ env: { COFFER_VAULT_DATA_DIR: join(cluster.dcs[victim]!.dir, 'vault') } }))).nodeId;
    const get = async (key: string): Promise<Buffer | null> => {
      const r = (await cluster.etcd(cluster.dcs[victim]!.etcdUrl, '/v3/kv/range', { key: Buffer.from(key).toString('base64') }, 5000)) as { kvs?: Array<{ value?: string }> };
      return r.kvs?.[0] ? Buffer.from(r.kvs[0].value ?? '', 'base64') : null;
    };
    await until('the restarted node acked the log head', 30_000, async () => {
      const head = Number((await get('coffer/vault/loghead'))?.toString() ?? '0');
      const ack = await get(`coffer/vault/group/acks/${victimId}`);
      return ack !== null && head > 0 && Number(ack.readBigUInt64BE(0)) === head;
    });
    const all = [...registered];
    for (let i = 0; i < all.length; i += 8) {
      await Promise.all(all.slice(i, i + 8).map(async (a) => void (await recoverOk(cluster, a, victim))));
    }
    assert.ok(all.length > early.length, 'registrations continued during the outage');
  });
});
