/* global setInterval */
// `npm run cluster`: three "data centres" on 127.0.0.1, 127.0.0.2, 127.0.0.3, each with
// an etcd member and a coffer-vault node (etcd store), sharing the fleet keys through the
// key ceremony (fleet init / node-key / export-for / join). Prints the endpoints and the
// bundle clients pin; Ctrl-C stops every process it started (by PID).
//   npm run cluster [-- --dir DIR] [-- --fresh]
// State lives in .coffer-data/cluster/ (etcd data, node key files, logs) unless --dir.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { root } from './ensure-setup.mjs';

const argv = process.argv.slice(2);
const dirArg = argv.indexOf('--dir');
const dir = resolve(dirArg >= 0 ? argv[dirArg + 1] : join(root, '.coffer-data', 'cluster'));
if (argv.includes('--fresh') && existsSync(dir)) rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true, mode: 0o700 });

const { startCluster, DEFAULT_CLUSTER_PORTS } = await import(join(root, 'packages', 'vault', 'dist', 'test', 'helpers', 'cluster.js'));
process.stderr.write(`cluster: starting 3 data centres in ${dir} …\n`);
let cluster;
try {
  cluster = await startCluster({ dir, dcs: 3, ports: DEFAULT_CLUSTER_PORTS });
} catch (err) {
  process.stderr.write(`cluster: error: ${err.message}\n`);
  process.exit(1);
}
const relay = existsSync(join(root, 'packages', 'relay', 'dist', 'src', 'main.js'));
for (const dc of cluster.dcs) {
  process.stdout.write(`${dc.name}  etcd ${dc.etcdUrl} (pid ${dc.etcdPid()})  vault ${dc.vaultUrl} (pid ${dc.vaultPid()})  logs ${dc.dir}\n`);
}
process.stdout.write(`\nvault endpoints (for the front ends): ${cluster.dcs.map((d) => d.vaultUrl).join(',')}\n`);
process.stdout.write(`etcd endpoints: ${cluster.dcs.map((d) => d.etcdUrl).join(',')}\n`);
process.stdout.write(`fleet key bundle (clients pin this):\n${cluster.bundleJson}\n`);
if (!relay) process.stdout.write('\nnote: coffer-relay is not built yet (packages/relay), so no front ends were started: point clients or relays at the vault endpoints above\n');
process.stdout.write('\nCtrl-C stops the cluster.\n');

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  process.stderr.write('cluster: stopping …\n');
  await cluster.stop();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
setInterval(() => {}, 1 << 30);
