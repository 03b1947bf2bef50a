/** Real service processes for the client's tests: coffer-vault and coffer-relay. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { generateKeyPairSync, sign, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', '..');
export const VAULT_MAIN = join(ROOT, 'packages', 'vault', 'dist', 'src', 'server', 'main.js');
export const RELAY_MAIN = join(ROOT, 'packages', 'relay', 'dist', 'src', 'main.js');
export const COFFER_MAIN = join(ROOT, 'packages', 'cli', 'dist', 'src', 'main.js');

export interface Service {
  readonly child: ChildProcess;
  readonly url: string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): { stdout: Buffer; stderr: Buffer };
  stop(): Promise<void>;
}

/** Spawns `node main args` and waits for "listening on http://…" on stderr or stdout. */
export async function startService(name: string, main: string, args: string[], env: Record<string, string>): Promise<Service> {
  const child = spawn(process.execPath, [main, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    const look = (): void => {
      const text = Buffer.concat(err).toString() + Buffer.concat(out).toString();
      const m = /listening on (https?:\/\/[\d.]+:\d+)/.exec(text) ?? /"url":"(https?:\/\/[\d.]+:\d+)"/.exec(text);
      if (m) resolve(m[1]!);
    };
    child.stdout!.on('data', (d: Buffer) => {
      out.push(d);
      look();
    });
    child.stderr!.on('data', (d: Buffer) => {
      err.push(d);
      look();
    });
    child.once('exit', (code, signal) => reject(new Error(`${name} exited (${code ?? signal}) before listening:\n${Buffer.concat(err).toString()}${Buffer.concat(out).toString()}`)));
    setTimeout(() => reject(new Error(`${name} did not start within 20 s:\n${Buffer.concat(err).toString()}`)), 20_000).unref();
  });
  return {
    child,
    url,
    output: () => ({ stdout: Buffer.concat(out), stderr: Buffer.concat(err) }),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await once(child, 'exit');
      clearTimeout(t);
    },
  };
}

export function vaultEnv(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    COFFER_VAULT_DATA_DIR: join(dir, 'vault'),
    COFFER_VAULT_PORT: '0',
    COFFER_VAULT_HOST: '127.0.0.1',
    COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1',
    COFFER_VAULT_LINK_KEY_FILE: linkKeyFile(dir),
    COFFER_VAULT_LOG_LEVEL: 'info',
    ...extra,
  };
}

/** A fresh link key shared by the relay and the vault. */
export function linkKeyFile(dir: string): string {
  const file = join(dir, 'link.key');
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  return file;
}

export async function startVault(dir: string, extra: Record<string, string> = {}): Promise<Service & { bundle: string }> {
  const env = vaultEnv(dir, extra);
  const v = await startService('coffer-vault', VAULT_MAIN, ['serve'], env);
  const r = spawnSync(process.execPath, [VAULT_MAIN, 'bundle'], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) {
    await v.stop();
    throw new Error(`coffer-vault bundle: ${r.stderr}`);
  }
  return Object.assign(v, { bundle: r.stdout });
}

export function relayBuilt(): boolean {
  return existsSync(RELAY_MAIN);
}

/** An app's token signer (ES256), for JWT mode. */
export function appTokenIssuer(): { publicKey: KeyObject; jwk: object; token(sub: string, ttlSeconds?: number): string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = 'test-app-key';
  return {
    publicKey,
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' },
    token(sub, ttl = 600) {
      const now = Math.floor(Date.now() / 1000);
      const enc = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
      const head = enc({ alg: 'ES256', typ: 'JWT', kid });
      const body = enc({ sub, iat: now, exp: now + ttl, iss: 'coffer-test-app', aud: 'coffer-relay' });
      const sig = sign('sha256', Buffer.from(`${head}.${body}`), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      return `${head}.${body}.${sig.toString('base64url')}`;
    },
  };
}
