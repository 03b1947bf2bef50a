// Interleaved A/B of the relay's local blob store alone (issue 13): puts of packs into a
// fresh directory tree, as a backup sends them (8 MiB bodies in 64 KiB pieces, names
// data/<2 hex>/<64 hex>, `--inflight` at once), with this checkout's LocalBlobStore (A)
// and another build's (B, `--ab OTHER_ROOT`), alternating which goes first. Prints per
// round each build's wall time, the process CPU it used (main thread and libuv pool:
// user + system) and the median put latency, then the medians and B/A ratios.
//
// node scripts/bench-relay-store.mjs --ab /work/base-s18 [--rounds 8] [--packs 128]
//   [--mib 8] [--inflight 2] [--dir DIR (default $COFFER_BENCH_DIR or ./bench-work)]
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const other = opt('ab');
if (!other) throw new Error('--ab OTHER_ROOT is required');
const rounds = Number(opt('rounds', 8));
const packs = Number(opt('packs', 128));
const mib = Number(opt('mib', 8));
const inflight = Number(opt('inflight', 2));
const work = resolve(opt('dir', process.env.COFFER_BENCH_DIR || 'bench-work'), 'store-ab');
const load = async (root) => (await import(pathToFileURL(join(root, 'packages/relay/dist/src/blobs/local.js')).href)).LocalBlobStore;
const builds = { A: await load(resolve('.')), B: await load(resolve(other)) };

const body = randomBytes(mib * 1024 * 1024);
const PIECE = 64 * 1024;
function* pieces() {
  for (let o = 0; o < body.length; o += PIECE) yield body.subarray(o, o + PIECE);
}

async function run(Store, root) {
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const store = new Store(root);
  const names = Array.from({ length: packs }, () => `data/${randomBytes(1).toString('hex')}/${randomBytes(32).toString('hex')}`);
  const lat = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (next < names.length) {
        const name = names[next++];
        const s = performance.now();
        const r = await store.put('ns', name, Readable.from(pieces(), { objectMode: false, highWaterMark: PIECE }));
        if (r !== 'created') throw new Error(`put ${name}: ${r}`);
        lat.push(performance.now() - s);
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  await store.close();
  rmSync(root, { recursive: true, force: true });
  lat.sort((a, b) => a - b);
  return { wall, cpu: (c.user + c.system) / 1e6, sys: c.system / 1e6, lat: lat[lat.length >> 1] };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const out = { A: [], B: [] };
const ratios = [];
await run(builds.A, join(work, 'warm')); // page cache and JIT warm-up, not counted
for (let i = 0; i < rounds; i++) {
  const order = i % 2 ? ['B', 'A'] : ['A', 'B'];
  const r = {};
  for (const k of order) r[k] = await run(builds[k], join(work, k));
  out.A.push(r.A);
  out.B.push(r.B);
  ratios.push(r.B.wall / r.A.wall);
  const f = (x) => `${x.wall.toFixed(2)} s (CPU ${x.cpu.toFixed(2)} s, system ${x.sys.toFixed(2)} s, put median ${x.lat.toFixed(1)} ms)`;
  console.log(`store-ab: round ${i + 1} (${order.join(' then ')}): A ${f(r.A)}; B ${f(r.B)}; B/A ${(r.B.wall / r.A.wall).toFixed(3)}`);
}
const m = (k, f) => median(out[k].map(f));
console.log(
  `store-ab: medians over ${rounds} rounds (${packs} × ${mib} MiB, ${inflight} at once): wall A ${m('A', (x) => x.wall).toFixed(2)} s, B ${m('B', (x) => x.wall).toFixed(2)} s, B/A ${median(ratios).toFixed(3)}; ` +
    `CPU A ${m('A', (x) => x.cpu).toFixed(2)} s, B ${m('B', (x) => x.cpu).toFixed(2)} s; put latency A ${m('A', (x) => x.lat).toFixed(1)} ms, B ${m('B', (x) => x.lat).toFixed(1)} ms`,
);
