/** A coffer-vault running as a real child process (for kill -9 and CLI tests). */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { once } from 'node:events';
import { INSECURE_FAST_KSF_FOR_TESTING, parseFleetKeyBundle, VaultClient, type FleetKey } from '@coffer/protocol';

export const MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'server', 'main.js');

export interface ChildVault {
  readonly child: ChildProcess;
  readonly url: string;
  readonly stderr: () => string;
  readonly stdout: () => string;
  stop(): Promise<void>;
}

/**
 * Without COFFER_VAULT_LINK_KEY_FILE in `env` the vault serves with link authentication
 * off (COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING): tests talk to it directly, with
 * no relay in front (see `httpClient`).
 */
export async function startChildVault(env: Record<string, string>): Promise<ChildVault> {
  const noLinkAuth = env.COFFER_VAULT_LINK_KEY_FILE ? {} : { COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1' };
  const child = spawn(process.execPath, [MAIN, 'serve'], { env: { ...process.env, COFFER_VAULT_PORT: '0', ...noLinkAuth, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      err += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code, signal) => reject(new Error(`coffer-vault exited (${code ?? signal}) before listening:\n${err}`)));
  });
  return {
    child,
    url,
    stderr: () => err,
    stdout: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/** `coffer-vault <args>` to completion. */
export function runVaultCli(args: string[], env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export async function bundleKey(env: Record<string, string>): Promise<FleetKey> {
  const r = runVaultCli(['bundle'], env);
  if (r.status !== 0) throw new Error(`coffer-vault bundle failed: ${r.stderr}`);
  return (await parseFleetKeyBundle(r.stdout)).keys[0]!;
}

export function httpClient(url: string, fleetKey: FleetKey, account: string): VaultClient {
  return new VaultClient({
    fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      const res = await fetch(`${url}/v1/request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account }, body: bytes });
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
      return new Uint8Array(await res.arrayBuffer());
    },
  });
}
