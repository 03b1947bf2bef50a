/**
 * Acks straight to the leader (spec §13.7, `group.peerUrl`): followers POST their acks to
 * the leader's request listener and put them in etcd at most every 250 ms, so a log entry
 * costs one raft write, not one per member. The endpoint is open to whoever reaches the
 * port (the operator included): an ack must prove itself exactly as one read from etcd.
 * Played here: garbage, forged MACs and replays of genuine acks sent to the leader while
 * both followers are stopped never commit anything, and no guess is answered.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeLogValue } from '../src/core/rollback.js';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { fleetClient, startCluster, waitCaughtUp, type Cluster } from './helpers/cluster.js';

const K = new Uint8Array(32).fill(6);
const GROUP = 'coffer/vault/group/';
const b64 = (s: string) => Buffer.from(s).toString('base64');
const prefixEnd = (s: string) => {
  const b = Buffer.from(s);
  b[b.length - 1]!++;
  return b.toString('base64');
};

describeIf('fleet: acks straight to the leader', etcdSkip(), () => {
  let cluster: Cluster;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-direct-ack-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, etcdTimeoutMs: 1000, ports: { etcdClient: 25390, etcdPeer: 25391, vault: 25392 }, vaultEnv: { COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
  });
  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function group(sub: string): Promise<Array<{ key: string; value: Buffer; version: number }>> {
    const res = await fetch(`${cluster.dcs[0]!.etcdUrl}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: b64(GROUP + sub), range_end: prefixEnd(GROUP + sub) }) });
    const j = (await res.json()) as { kvs?: Array<{ key: string; value?: string; version: string }> };
    return (j.kvs ?? []).map((kv) => ({ key: Buffer.from(kv.key, 'base64').toString().slice(GROUP.length), value: Buffer.from(kv.value ?? '', 'base64'), version: Number(kv.version) }));
  }
  /** The newest log entry's index and chain MAC, as etcd (and so the operator) shows them. */
  async function newest(): Promise<{ index: number; mac: Uint8Array }> {
    const index = await logHead();
    const res = await fetch(`${cluster.dcs[0]!.etcdUrl}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: b64(`coffer/vault/log/${String(index).padStart(20, '0')}`) }) });
    const j = (await res.json()) as { kvs?: Array<{ value: string }> };
    return { index, mac: decodeLogValue(Buffer.from(j.kvs![0]!.value, 'base64')).entry.mac };
  }
  async function logHead(): Promise<number> {
    const res = await fetch(`${cluster.dcs[0]!.etcdUrl}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: b64('coffer/vault/loghead') }) });
    const j = (await res.json()) as { kvs?: Array<{ value: string }> };
    return Number(Buffer.from(j.kvs![0]!.value, 'base64').toString());
  }
  /** The group leader's DC index and every member's node ID, from the peers etcd shows. */
  async function members(): Promise<{ leader: number; ids: string[] }> {
    const peers = await group('peers/');
    const leaderId = (await group('leader')).find((kv) => kv.key === 'leader')!.value.toString();
    const ids = cluster.dcs.map((dc) => peers.find((p) => p.value.toString() === dc.vaultUrl)!.key.slice('peers/'.length));
    return { leader: ids.indexOf(leaderId), ids };
  }
  const post = (url: string, body: Uint8Array) => fetch(`${url}/v1/group/ack`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body });

  it('every member publishes its peer URL; entries commit on direct acks with few etcd ack writes', async () => {
    assert.equal((await fleetClient(cluster, 'direct').register('pw', K)).outcome, 'ok');
    await waitCaughtUp(cluster);
    const { leader, ids } = await members();
    assert.ok(leader >= 0 && ids.every((id) => /^[0-9a-f]{16}$/.test(id)), JSON.stringify({ leader, ids }));
    const acks0 = await group('acks/');
    const head0 = await logHead();
    const started = Date.now();
    for (let i = 0; i < 20; i++) assert.equal((await fleetClient(cluster, 'direct', { prefer: leader }).recover('pw')).outcome, 'ok');
    const seconds = (Date.now() - started) / 1000;
    const entries = (await logHead()) - head0;
    const acks1 = await group('acks/');
    const puts = acks1.reduce((n, kv) => n + kv.version - (acks0.find((k) => k.key === kv.key)?.version ?? 0), 0);
    assert.ok(entries >= 30, `${entries} log entries for 20 logins`);
    // Through etcd alone, each follower would put one ack per entry (2 × entries).
    assert.ok(puts < entries, `${puts} ack writes in etcd for ${entries} entries in ${seconds.toFixed(1)} s`);
  });

  it('garbage, forged and replayed acks sent to the leader commit nothing while the followers are stopped; none answered', async () => {
    assert.equal((await fleetClient(cluster, 'forged').register('pw', K)).outcome, 'ok');
    await waitCaughtUp(cluster);
    const { leader, ids } = await members();
    const leaderUrl = cluster.dcs[leader]!.vaultUrl;
    const follower = cluster.dcs.findIndex((_, i) => i !== leader);
    // Bad input: wrong lengths are 400; a follower is not leading (503, the sender puts it in etcd).
    assert.equal((await post(leaderUrl, new Uint8Array(79))).status, 400);
    assert.equal((await post(leaderUrl, new Uint8Array(81))).status, 400);
    assert.equal((await post(cluster.dcs[follower]!.vaultUrl, new Uint8Array(80))).status, 503);
    // Genuine acks as etcd holds them now (older than anything appended from here on).
    const genuine = (await group('acks/')).filter((kv) => kv.key !== `acks/${ids[leader]}`);
    assert.ok(genuine.length >= 1);

    const stopped = cluster.dcs.filter((_, i) => i !== leader).map((dc) => dc.vaultPid()!);
    for (const pid of stopped) process.kill(pid, 'SIGSTOP');
    try {
      let flooding = true;
      const flood = (async () => {
        while (flooding) {
          for (let i = 0; i < cluster.dcs.length; i++) {
            if (i === leader) continue;
            const node = Buffer.from(ids[i]!, 'hex');
            // Random statements claiming the next index; the newest entry's true chain MAC
            // (public in etcd) with a forged ack MAC; the genuine older acks replayed.
            const top = await newest();
            const idx = Buffer.alloc(8);
            idx.writeBigUInt64BE(BigInt(top.index + 1));
            await post(leaderUrl, Buffer.concat([node, idx, randomBytes(64)])).catch(() => undefined);
            idx.writeBigUInt64BE(BigInt(top.index));
            await post(leaderUrl, Buffer.concat([node, idx, top.mac, randomBytes(32)])).catch(() => undefined);
            await post(leaderUrl, Buffer.concat([node, Buffer.alloc(8, 0), randomBytes(64)])).catch(() => undefined);
            for (const g of genuine) await post(leaderUrl, Buffer.concat([Buffer.from(g.key.slice('acks/'.length), 'hex'), g.value])).catch(() => undefined);
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      // The leader appends and captures the guess, but no majority captured it: never answered.
      await assert.rejects(fleetClient(cluster, 'forged', { prefer: leader, deadlineMs: 7000 }).recover('wrong'), /./);
      flooding = false;
      await flood;
    } finally {
      for (const pid of stopped) process.kill(pid, 'SIGCONT');
    }
    await waitCaughtUp(cluster);
    const r = await fleetClient(cluster, 'forged').recover('pw');
    assert.equal(r.outcome, 'ok', 'service is back once the followers run again');
  });

  it('the operator points the leader\'s peer URL at a server that never answers: acks fall back to etcd, logins still complete', async () => {
    assert.equal((await fleetClient(cluster, 'blackhole').register('pw', K)).outcome, 'ok');
    await waitCaughtUp(cluster);
    const { leader, ids } = await members();
    const sockets: Socket[] = [];
    // Sockets still open, with when each was accepted. A follower gives up on an ack after
    // 500 ms and only then opens its next connection, but the server may see the old one
    // close after the new one opens (a loaded machine): so "in flight" at an accept means
    // open *and* accepted less than 400 ms before it.
    const openSince = new Map<Socket, number>();
    let maxInFlight = 0;
    const started = Date.now();
    const hole = createServer((sock) => {
      // Accepts and reads (so a close is seen), never answers.
      sockets.push(sock);
      sock.resume();
      const now = Date.now();
      let inFlight = 1;
      for (const t of openSince.values()) if (now - t < 400) inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      openSince.set(sock, now);
      sock.on('close', () => openSince.delete(sock));
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
    const holeUrl = `http://127.0.0.1:${(hole.address() as { port: number }).port}`;
    // The leader repairs its own peer key every full pass: keep rewriting it.
    let rewriting = true;
    const rewrite = (async () => {
      while (rewriting) {
        await fetch(`${cluster.dcs[0]!.etcdUrl}/v3/kv/put`, { method: 'POST', body: JSON.stringify({ key: b64(`${GROUP}peers/${ids[leader]}`), value: b64(holeUrl) }) });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      await new Promise((r) => setTimeout(r, 300)); // followers' next full pass reads it
      for (let i = 0; i < 5; i++) assert.equal((await fleetClient(cluster, 'blackhole', { prefer: leader, deadlineMs: 20_000 }).recover('pw')).outcome, 'ok');
      assert.ok(sockets.length >= 1, 'the followers did send to the black hole');
      assert.ok(maxInFlight <= 2, `at most one connection per follower at a time, however many acks (${maxInFlight} in flight at once, ${sockets.length} in all)`);
      // And no flood: each follower opens at most one connection per 500 ms ack timeout.
      const allowed = 2 * (Math.ceil((Date.now() - started) / 500) + 1);
      assert.ok(sockets.length <= allowed, `${sockets.length} connections in ${Date.now() - started} ms: more than one per follower per ack timeout (${allowed})`);
    } finally {
      rewriting = false;
      await rewrite;
      for (const sock of sockets) sock.destroy();
      hole.close();
    }
  });
});
