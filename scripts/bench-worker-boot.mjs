// What V8 flag settings cost a worker thread's start (issue 13; cli/src/heap.ts):
//   node scripts/bench-worker-boot.mjs [--rounds 5]
// Each start runs in its own process, the three ways alternating: "defaults" (V8's flags
// untouched), "heap.ts" (tuneHeapEarly as the CLI runs it: the backup's settings in
// force and set again every millisecond while the worker starts), "window" (the settings
// in force, V8's defaults from the worker's creation until it is online, then the
// settings again: measured in session 17 and not taken, see heap.ts). V8 accepts cached
// code only under the flag values it was made with, node's own modules' cache included.
// The worker imports two of the chunk worker's modules, then answers. Prints each start's
// CPU of the whole process (getrusage) and time to the worker's answer, and medians.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { root } from './ensure-setup.mjs';
import { argString } from './bench-args.mjs';

const rounds = Number(argString('rounds', '5'));
const heap = pathToFileURL(join(root, 'packages', 'cli', 'dist', 'src', 'heap.js')).href;
const mods = ['repository/compress.js', 'crypto/repository-keys.js'].map((m) => pathToFileURL(join(root, 'packages', 'backup', 'dist', 'src', m)).href);

const child = (mode) => `
import { Worker } from 'node:worker_threads';
import { setFlagsFromString } from 'node:v8';
const mode = ${JSON.stringify(mode)};
const tuned = () => { setFlagsFromString('--semi-space-growth-factor=1'); setFlagsFromString('--heap-growing-percent=20'); };
const plain = () => { setFlagsFromString('--semi-space-growth-factor=2'); setFlagsFromString('--heap-growing-percent=0'); };
if (mode === 'heap.ts') (await import(${JSON.stringify(heap)})).tuneHeapEarly({});
if (mode === 'window') { tuned(); process.on('worker', plain); }
const u0 = process.cpuUsage();
const t0 = performance.now();
const again = mode === 'window' ? true : undefined;
const src = \`import(${JSON.stringify(mods[0])}).then(() => import(${JSON.stringify(mods[1])})).then(() => require('node:worker_threads').parentPort.postMessage('ready'))\`;
const w = new Worker(src, { eval: true, resourceLimits: { maxYoungGenerationSizeMb: 8 } });
w.once('online', () => { if (again) tuned(); });
w.once('message', async () => {
  const u = process.cpuUsage(u0);
  console.log(JSON.stringify({ cpu: (u.user + u.system) / 1000, ready: performance.now() - t0 }));
  await w.terminate();
});
`;

const modes = ['defaults', 'heap.ts', 'window'];
// Script files, not -e: a worker inherits the process's flags, --input-type among them.
const dir = mkdtempSync(join(tmpdir(), 'coffer-worker-boot-'));
const script = Object.fromEntries(modes.map((m) => [m, join(dir, `${m}.mjs`)]));
for (const m of modes) writeFileSync(script[m], child(m));
const got = Object.fromEntries(modes.map((m) => [m, []]));
for (let r = 0; r < rounds; r++) {
  for (const m of r % 2 ? [...modes].reverse() : modes) {
    const out = spawnSync(process.execPath, [script[m]], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
    if (out.status !== 0) throw new Error(`${m}: ${out.stderr}`);
    const v = JSON.parse(out.stdout.trim());
    got[m].push(v);
    console.log(`round ${r + 1} ${m.padEnd(8)} cpu ${v.cpu.toFixed(1)} ms, worker ready after ${v.ready.toFixed(1)} ms`);
  }
}
rmSync(dir, { recursive: true, force: true });
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
for (const m of modes) console.log(`${m.padEnd(8)} median cpu ${median(got[m].map((v) => v.cpu)).toFixed(1)} ms, ready ${median(got[m].map((v) => v.ready)).toFixed(1)} ms`);
