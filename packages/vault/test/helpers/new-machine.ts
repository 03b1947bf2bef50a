/**
 * A new machine for a data centre's slot, as the key ceremony makes one (docs/operations.md
 * §4.2): a new node key, the fleet's keys exported to it from a running member's vault
 * directory, `fleet join`, then `coffer-vault serve` on its own port, logging to a file.
 * Shared by the fleet tests that replace members or play an operator's extra identities.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/server/config.js';
import { exportFor, join as joinFleet, nodeKey } from '../../src/server/fleet-ceremony.js';
import type { Cluster, DataCentre } from '../../src/server/cluster-support.js';
import { MAIN } from './child-vault.js';

export interface VaultMachine {
  readonly id: string;
  readonly url: string;
  readonly log: string;
  child: ChildProcess;
  readonly env: Record<string, string | undefined>;
}

/** Starts `coffer-vault serve` with `env`, its output appended to `log`. */
export function spawnVault(env: Record<string, string | undefined>, log: string): ChildProcess {
  const fd = openSync(log, 'a');
  const child = spawn(process.execPath, [MAIN, 'serve'], { env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  return child;
}

/**
 * A key ceremony in `dc`'s directory (`<name>-<port>`), the keys exported from `source`'s
 * vault, started on `port` (admin on port + 1). Not waited for.
 */
export async function startNewMachine(cluster: Cluster, dc: DataCentre, source: DataCentre, port: number, name = 'vault-new'): Promise<VaultMachine> {
  const vaultDir = join(dc.dir, `${name}-${port}`);
  mkdirSync(vaultDir, { recursive: true });
  const config = loadConfig({ env: { COFFER_VAULT_DATA_DIR: vaultDir } });
  const node = await nodeKey(config);
  const pkg = await exportFor(loadConfig({ env: { COFFER_VAULT_DATA_DIR: join(source.dir, 'vault') } }), Buffer.from(node.publicKey, 'hex'));
  await joinFleet(config, JSON.stringify(pkg), Buffer.from(cluster.fleetKey.keyId).toString('hex'));
  const url = `http://${dc.host}:${port}`;
  const log = join(dc.dir, `${name}-${port}.log`);
  const env = { ...process.env, ...dc.vaultEnv({ COFFER_VAULT_DATA_DIR: vaultDir, COFFER_VAULT_PORT: String(port), COFFER_VAULT_ADMIN_PORT: String(port + 1), COFFER_VAULT_GROUP_PEER_URL: url }) };
  return { id: node.nodeId, url, log, child: spawnVault(env, log), env };
}

/** kill -9 every machine still running, and waits for each to exit. */
export async function killMachines(machines: readonly VaultMachine[]): Promise<void> {
  for (const m of machines) {
    if (m.child.exitCode === null && m.child.signalCode === null) {
      const exited = new Promise((r) => m.child.once('exit', r));
      m.child.kill('SIGKILL');
      await exited;
    }
  }
}
