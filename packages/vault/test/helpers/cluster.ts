/**
 * Test helpers over the cluster starter (which is product code, used by
 * `npm run cluster`): src/server/cluster-support.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { INSECURE_FAST_KSF_FOR_TESTING, VaultClient } from '@coffer/protocol';
import { until, type Cluster } from '../../src/server/cluster-support.js';

export * from '../../src/server/cluster-support.js';

/** The last warnings and errors of a node's log (its JSON lines), for a failure's message. */
function logWarnings(dir: string): string {
  try {
    const lines = readFileSync(join(dir, 'vault.log'), 'utf8').split('\n').filter((l) => /"level":(40|50|60)/.test(l));
    return lines.length > 0 ? `\n  its log's last warnings:\n  ${lines.slice(-6).join('\n  ')}` : '';
  } catch {
    return '';
  }
}

export interface FleetTransportOptions {
  /** DC index tried first (round-robin through the others on failure). */
  readonly prefer?: number;
  /** Give up after this long (default 30 s). */
  readonly deadlineMs?: number;
  /** Called with each HTTP status / network failure seen (for assertions). */
  readonly onAttempt?: (info: { dc: number; status: number | null }) => void;
}

/**
 * What a front end does: send to one vault node; on a network error or a retryable 503,
 * try the next node, backing off, until a deadline. Never retries a 4xx.
 */
export function fleetTransport(cluster: Cluster, account: string, o: FleetTransportOptions = {}): (bytes: Uint8Array) => Promise<Uint8Array> {
  const n = cluster.dcs.length;
  return async (bytes) => {
    const end = Date.now() + (o.deadlineMs ?? 30_000);
    let i = o.prefer ?? 0;
    let last: string;
    for (let attempt = 0; ; attempt++) {
      const dc = cluster.dcs[i % n]!;
      try {
        const res = await fetch(`${dc.vaultUrl}/v1/request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account }, body: bytes, signal: AbortSignal.timeout(10_000) });
        o.onAttempt?.({ dc: dc.index, status: res.status });
        if (res.status === 200) return new Uint8Array(await res.arrayBuffer());
        last = `HTTP ${res.status}: ${await res.text()}`;
        if (res.status !== 503) throw new Error(`vault ${dc.name} answered ${last}${res.status >= 500 ? logWarnings(dc.dir) : ''}`);
      } catch (err) {
        if ((err as Error).message.startsWith('vault ')) throw err;
        o.onAttempt?.({ dc: dc.index, status: null });
        last = (err as Error).message;
      }
      if (Date.now() > end) throw new Error(`fleet unavailable for ${o.deadlineMs ?? 30_000} ms: ${last}`);
      i++;
      if (attempt % n === n - 1) await sleep(Math.min(500, 50 * (attempt + 1)));
    }
  };
}

/**
 * A front end that knows every node of `urls()` (asked at each try: new machines too):
 * tries the next one on a 503 or a network error until `deadlineMs`; any other answer
 * than 200 or 503 is an error.
 */
export function urlsClient(cluster: Cluster, urls: () => string[], account: string, deadlineMs = 30_000): VaultClient {
  return new VaultClient({
    fleetKey: cluster.fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      const end = Date.now() + deadlineMs;
      let last: string;
      for (let i = 0; ; i++) {
        const all = urls();
        try {
          const res = await fetch(`${all[i % all.length]}/v1/request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account }, body: bytes, signal: AbortSignal.timeout(10_000) });
          if (res.status === 200) return new Uint8Array(await res.arrayBuffer());
          last = `HTTP ${res.status}: ${await res.text()}`;
          if (res.status !== 503) throw new Error(`vault answered ${last}`);
        } catch (err) {
          if ((err as Error).message.startsWith('vault answered')) throw err;
          last = (err as Error).message;
        }
        if (Date.now() > end) throw new Error(`fleet unavailable: ${last}`);
        if (i % all.length === all.length - 1) await sleep(100);
      }
    },
  });
}

/**
 * One wrong guess for `account` through `client`; a wrong-password answer's guesses
 * remaining is pushed onto `remaining` (every answer an attacker got, in order).
 */
export async function wrongGuessCounted(client: (account: string, deadlineMs: number) => VaultClient, remaining: number[], account: string, deadlineMs = 30_000): Promise<string> {
  const r = await client(account, deadlineMs).recover('not the password');
  if (r.outcome === 'wrong-password') remaining.push(r.guessesRemaining);
  return r.outcome;
}

export function fleetClient(cluster: Cluster, account: string, o: FleetTransportOptions = {}): VaultClient {
  return new VaultClient({ fleetKey: cluster.fleetKey, account, ksf: INSECURE_FAST_KSF_FOR_TESTING, transport: fleetTransport(cluster, account, o) });
}

/** Sum of one counter over every vault node that answers. */
export async function fleetMetric(cluster: Cluster, name: string): Promise<number> {
  let total = 0;
  for (const dc of cluster.dcs) {
    try {
      const text = await (await fetch(`${dc.adminUrl}/metrics`, { signal: AbortSignal.timeout(1000) })).text();
      for (const line of text.split('\n')) if (line.startsWith(name)) total += Number(line.split(' ').pop());
    } catch {
      /* node down */
    }
  }
  return total;
}

/** Waits until every live etcd member has applied at least the leader's revision. */
export async function waitCaughtUp(cluster: Cluster, deadlineMs = 20_000): Promise<void> {
  await until('members caught up', deadlineMs, async () => {
    const revs: number[] = [];
    for (const dc of cluster.dcs) {
      if (!dc.etcdPid()) continue;
      const r = (await cluster.etcd(dc.etcdUrl, '/v3/kv/range', { key: Buffer.from('\0').toString('base64'), serializable: true }, 1000)) as { header?: { revision?: string } };
      revs.push(Number(r.header?.revision));
    }
    return revs.length > 0 && revs.every((r) => r === revs[0]);
  });
}

/**
 * etcd as its administrator sees it, through DC 0's member: `etcd(path, body)` is one JSON
 * call; `range(key, end?)` the keys (base64, as etcd gives them) and values (base64).
 */
export function etcdAdmin(cluster: () => Cluster): { etcd: (path: string, body: unknown) => Promise<unknown>; range: (key: string, end?: string) => Promise<Array<{ key: string; value: string }>> } {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const etcd = (path: string, body: unknown): Promise<unknown> => cluster().etcd(cluster().dcs[0]!.etcdUrl, path, body, 5000);
  const range = async (key: string, end?: string): Promise<Array<{ key: string; value: string }>> =>
    ((await etcd('/v3/kv/range', { key: b64(key), ...(end ? { range_end: b64(end) } : {}) })) as { kvs?: Array<{ key: string; value?: string }> }).kvs?.map((k) => ({ key: k.key, value: k.value ?? '' })) ?? [];
  return { etcd, range };
}

/**
 * One wrong-password recovery through the fleet (a front end's retries, 8 s): the guesses
 * left, another outcome, or the failure's message.
 */
export async function wrongGuessOn(cluster: Cluster, account: string, prefer = 0): Promise<number | string> {
  try {
    const r = await fleetClient(cluster, account, { prefer, deadlineMs: 8000 }).recover('not the password');
    return r.outcome === 'wrong-password' ? r.guessesRemaining : r.outcome;
  } catch (err) {
    return (err as Error).message;
  }
}
