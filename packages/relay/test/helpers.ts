/** Test helpers: a relay in-process (app.inject) or as a child process, real vaults, device keys. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { parseFleetKeyBundle, type FleetKey } from '@coffer/protocol';
import { loadConfig, type RelayConfig } from '../src/config.js';
import { assembleRelay, type AssembleOptions, type RunningRelay } from '../src/start.js';
import { sessionSigningInput } from '../src/auth/account-store.js';
import { powSolves } from '../src/routes/accounts.js';

/** Solves a proof-of-work puzzle from a 428 proof-of-work-required answer. */
export function solvePow(pow: { challenge: string; bits: number }): { challenge: string; bits: number; nonce: string } {
  const ch = Buffer.from(pow.challenge, 'base64url');
  const nonce = Buffer.alloc(8);
  for (let i = 0; ; i++) {
    nonce.writeUInt32BE(i >>> 0, 4);
    nonce.writeUInt32BE(Math.floor(i / 2 ** 32), 0);
    if (powSolves(ch, nonce, pow.bits)) return { challenge: pow.challenge, bits: pow.bits, nonce: nonce.toString('base64url') };
  }
}

const here = dirname(fileURLToPath(import.meta.url));
export const RELAY_MAIN = join(here, '..', 'src', 'main.js');
export const VAULT_MAIN = join(here, '..', '..', '..', 'vault', 'dist', 'src', 'server', 'main.js');

export function tempDir(t: { after: (fn: () => void) => void }, prefix = 'coffer-relay-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A fixed link key file in `dir`. */
export function writeLinkKey(dir: string, hex = 'ab'.repeat(32)): string {
  const file = join(dir, 'link.key');
  writeFileSync(file, hex + '\n', { mode: 0o600 });
  return file;
}

export function testConfig(dir: string, env: Record<string, string> = {}, overrides: Partial<RelayConfig> = {}): RelayConfig {
  const base = loadConfig({ env: { COFFER_RELAY_DATA_DIR: dir, COFFER_RELAY_LINK_KEY_FILE: writeLinkKey(dir), COFFER_RELAY_PORT: '0', ...env }, cwd: dir });
  return { ...base, ...overrides };
}

export interface TestRelay {
  readonly relay: RunningRelay;
  inject(o: InjectOptions): Promise<LightMyRequestResponse>;
  /** A built-in account with a session: its id, token and device key. */
  signUp(ip?: string): Promise<Device>;
}

export interface Device {
  readonly account: string;
  readonly token: string;
  readonly key: KeyObject;
  readonly publicKey: string;
  auth(): Record<string, string>;
  /** A fresh device-key proof (`challenge`, `signature`) for the changes a session alone may not make. */
  proof(): Promise<{ challenge: string; signature: string }>;
}

export function newDeviceKey(): { key: KeyObject; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const jwk = publicKey.export({ format: 'jwk' });
  return { key: privateKey, publicKey: jwk.x! };
}

export function signChallenge(key: KeyObject, challenge: string): string {
  return sign(null, sessionSigningInput(Buffer.from(challenge, 'base64url')), key).toString('base64url');
}

/** A device-key proof: a fresh challenge of `account` signed with `key`. */
export async function keyProof(inject: (o: InjectOptions) => Promise<LightMyRequestResponse>, account: string, key: KeyObject): Promise<{ challenge: string; signature: string }> {
  const { challenge } = (await inject({ method: 'POST', url: '/v1/sessions/challenge', payload: { account } })).json<{ challenge: string }>();
  return { challenge, signature: signChallenge(key, challenge) };
}

export async function startRelay(t: { after: (fn: () => Promise<void> | void) => void }, config: RelayConfig, options: AssembleOptions = {}): Promise<TestRelay> {
  const relay = await assembleRelay(config, options);
  await relay.app.ready();
  t.after(() => relay.close());
  const inject = (o: InjectOptions): Promise<LightMyRequestResponse> => relay.app.inject(o);
  return {
    relay,
    inject,
    async signUp(ip = '127.0.0.1') {
      const { key, publicKey } = newDeviceKey();
      const created = await inject({ method: 'POST', url: '/v1/accounts', remoteAddress: ip, payload: { publicKey } });
      if (created.statusCode !== 201) throw new Error(`account creation: ${created.statusCode} ${created.body}`);
      const account = created.json<{ account: string }>().account;
      const ch = await inject({ method: 'POST', url: '/v1/sessions/challenge', remoteAddress: ip, payload: { account } });
      const { challenge } = ch.json<{ challenge: string }>();
      const s = await inject({ method: 'POST', url: '/v1/sessions', remoteAddress: ip, payload: { account, challenge, signature: signChallenge(key, challenge) } });
      if (s.statusCode !== 200) throw new Error(`sign-in: ${s.statusCode} ${s.body}`);
      const token = s.json<{ token: string }>().token;
      return { account, token, key, publicKey, auth: () => ({ authorization: `Bearer ${token}` }), proof: () => keyProof(inject, account, key) };
    },
  };
}

/** A plain HTTP server on 127.0.0.1:0 standing in for a broken upstream. */
export async function standIn(t: { after: (fn: () => Promise<void> | void) => void }, handler: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void): Promise<{ url: string; server: Server; hits: () => number }> {
  let hits = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      hits++;
      handler(req, res, Buffer.concat(chunks));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, hits: () => hits };
}

/** A port nothing listens on. */
export async function deadUrl(): Promise<string> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

export interface Child {
  readonly child: ChildProcess;
  readonly url: string;
  readonly stderr: () => string;
  readonly stdout: () => string;
  stop(): Promise<void>;
}

export async function startChild(main: string, env: Record<string, string>, name: string): Promise<Child> {
  const child = spawn(process.execPath, [main, 'serve'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start in 20 s:\n${err}`)), 20_000);
    child.stderr!.on('data', (d) => {
      err += d;
      const m = /listening on (https?:\/\/[\d.]+:\d+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before listening:\n${err}`));
    });
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

/** A real coffer-vault (software platform, SQLite in `dir`, weak KSF allowed for speed). */
export async function startVault(dir: string, linkKeyFile: string | null): Promise<Child & { fleetKey: FleetKey }> {
  const env: Record<string, string> = { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_PORT: '0', COFFER_VAULT_LOG_LEVEL: 'warn', COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', ...(linkKeyFile ? { COFFER_VAULT_LINK_KEY_FILE: linkKeyFile } : {}) };
  // Relay tests start two real vaults on one `dir` (one SQLite file): not a one-node
  // group, so without the vault's rollback protection (spec/vault-protocol.md §13).
  env.COFFER_VAULT_INSECURE_NO_ROLLBACK_PROTECTION_FOR_TESTING = '1';
  const vault = await startChild(VAULT_MAIN, env, 'coffer-vault');
  const r = spawnSync(process.execPath, [VAULT_MAIN, 'bundle'], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`coffer-vault bundle: ${r.stderr}`);
  const fleetKey = (await parseFleetKeyBundle(r.stdout)).keys[0]!;
  return { ...vault, fleetKey };
}

/** Waits until the relay's upload bytes in flight (its metric) reach `bytes`. */
export async function inFlightReaches(r: TestRelay, bytes: number): Promise<void> {
  for (const end = Date.now() + 20_000; Date.now() < end; await new Promise((resolve) => setTimeout(resolve, 5))) {
    const m = /^coffer_relay_upload_bytes_in_flight (\d+)$/m.exec((await r.relay.admin.inject({ method: 'GET', url: '/metrics' })).body);
    if (m && Number(m[1]) >= bytes) return;
  }
  throw new Error(`upload bytes in flight never reached ${bytes}`);
}
