/**
 * etcd with mutual TLS and RBAC, for `npm run cluster` and the store tests:
 * a private CA and certificates made with the `openssl` CLI, the etcd flags that use
 * them, and the users and roles that limit the vault to its prefix.
 *
 *   root          etcd's administrator (needed to enable auth); its password is kept in
 *                 DIR/pki/root.password (0600) and used only here, never by a vault.
 *   coffer-vault  role `coffer-vault`: readwrite on the vault's prefix, nothing else.
 *
 * Client certificates have no CommonName (see `makeEtcdPki`).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import { join } from 'node:path';

export interface EtcdPki {
  readonly dir: string;
  readonly caFile: string;
  /** Per member host (IP): server and peer certificate and key. */
  member(host: string): { certFile: string; keyFile: string };
  /** The vault nodes' client certificate (O=coffer-vault, no CN). */
  readonly vaultCertFile: string;
  readonly vaultKeyFile: string;
  /** An administrator's client certificate (O=coffer-admin), for setting up RBAC. */
  readonly adminCertFile: string;
  readonly adminKeyFile: string;
  /** A client certificate from another CA: must be refused. */
  readonly rogueCertFile: string;
  readonly rogueKeyFile: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function newKeyAndCsr(dir: string, name: string, subject: string): void {
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', subject], dir);
  chmodSync(join(dir, `${name}-key.pem`), 0o600);
}

function sign(dir: string, name: string, ca: string, ext: string): void {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}-key.pem`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '825', '-extfile', `${name}.ext`], dir);
}

function newCa(dir: string, name: string, cn: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}.pem`, '-days', '3650', '-subj', `/CN=${cn}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  chmodSync(join(dir, `${name}-key.pem`), 0o600);
}

/** Creates (or reuses) the PKI under `dir`/pki for members on `hosts`. */
export function makeEtcdPki(dir: string, hosts: readonly string[]): EtcdPki {
  const pki = join(dir, 'pki');
  mkdirSync(pki, { recursive: true, mode: 0o700 });
  if (!existsSync(join(pki, 'ca.pem'))) newCa(pki, 'ca', 'coffer-etcd-ca');
  if (!existsSync(join(pki, 'rogue-ca.pem'))) newCa(pki, 'rogue-ca', 'not-coffer-ca');
  for (const host of hosts) {
    const name = `member-${host}`;
    if (existsSync(join(pki, `${name}.pem`))) continue;
    newKeyAndCsr(pki, name, `/CN=etcd-${host}`);
    // serverAuth for clients and peers, clientAuth for peer connections (and for the
    // gateway's own connection to the member's gRPC server).
    sign(pki, name, 'ca', `subjectAltName=IP:${host},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n`);
  }
  // Client certificates carry no CommonName: once auth is on, etcd 3.4's JSON gateway
  // refuses a certificate with a CN ("CommonName of client sending a request against
  // gateway will be ignored"); the RBAC identity comes from the user and password.
  const client = (name: string, org: string, ca: string): void => {
    if (existsSync(join(pki, `${name}.pem`))) return;
    newKeyAndCsr(pki, name, `/O=${org}`);
    sign(pki, name, ca, 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');
  };
  client('client-vault', 'coffer-vault', 'ca');
  client('client-admin', 'coffer-admin', 'ca');
  client('client-rogue', 'coffer-vault', 'rogue-ca');
  return {
    dir: pki,
    caFile: join(pki, 'ca.pem'),
    member: (host) => ({ certFile: join(pki, `member-${host}.pem`), keyFile: join(pki, `member-${host}-key.pem`) }),
    vaultCertFile: join(pki, 'client-vault.pem'),
    vaultKeyFile: join(pki, 'client-vault-key.pem'),
    adminCertFile: join(pki, 'client-admin.pem'),
    adminKeyFile: join(pki, 'client-admin-key.pem'),
    rogueCertFile: join(pki, 'client-rogue.pem'),
    rogueKeyFile: join(pki, 'client-rogue-key.pem'),
  };
}

/** etcd flags for one member: client and peer TLS, client certificates required on both. */
export function etcdTlsArgs(pki: EtcdPki, host: string): string[] {
  const m = pki.member(host);
  return [
    '--client-cert-auth', '--trusted-ca-file', pki.caFile, '--cert-file', m.certFile, '--key-file', m.keyFile,
    '--peer-client-cert-auth', '--peer-trusted-ca-file', pki.caFile, '--peer-cert-file', m.certFile, '--peer-key-file', m.keyFile,
  ];
}

/** A password made once and kept in `file` (0600). */
export function passwordFile(file: string): string {
  if (!existsSync(file)) writeFileSync(file, randomBytes(18).toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
  return readFileSync(file, 'utf8').trim();
}

export interface TlsClient {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

/** One JSON POST to etcd over TLS with `client`'s certificate; `token` as Authorization. */
export function etcdPost(url: string, path: string, body: unknown, client: TlsClient, token?: string, timeoutMs = 5000): Promise<{ status: number; json: Record<string, unknown> }> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(path, url), {
      method: 'POST',
      ...(client.ca ? { ca: readFileSync(client.ca) } : {}),
      ...(client.cert ? { cert: readFileSync(client.cert), key: readFileSync(client.key!) } : {}),
      agent: false,
      timeout: timeoutMs,
      headers: { 'content-type': 'application/json', 'content-length': payload.length, ...(token ? { authorization: token } : {}) },
    });
    req.once('timeout', () => req.destroy(new Error(`${url}${path}: timed out`)));
    req.once('error', reject);
    req.once('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.once('end', () => {
        let json: Record<string, unknown>;
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch {
          json = { raw: text };
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.end(payload);
  });
}

export interface EtcdAuthSetup {
  readonly rootPassword: string;
  readonly vaultUser: string;
  readonly vaultPassword: string;
}

/**
 * Users, the vault's role (readwrite on `prefix` only) and `auth enable`, through one
 * member with the admin client certificate. Idempotent: when auth is on already it
 * checks that the vault user can log in.
 */
export async function setupEtcdAuth(url: string, pki: EtcdPki, setup: EtcdAuthSetup, prefix: string): Promise<void> {
  const admin: TlsClient = { ca: pki.caFile, cert: pki.adminCertFile, key: pki.adminKeyFile };
  const login = await etcdPost(url, '/v3/auth/authenticate', { name: setup.vaultUser, password: setup.vaultPassword }, admin);
  if (login.status === 200 && login.json.token) return; // already set up
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  // The end of the range that holds every key starting with `prefix`.
  const end = Buffer.from(prefix);
  end[end.length - 1]! += 1;
  const steps: [string, unknown][] = [
    ['/v3/auth/user/add', { name: 'root', password: setup.rootPassword }],
    ['/v3/auth/role/add', { name: 'root' }],
    ['/v3/auth/user/grant', { user: 'root', role: 'root' }],
    ['/v3/auth/user/add', { name: setup.vaultUser, password: setup.vaultPassword }],
    ['/v3/auth/role/add', { name: 'coffer-vault' }],
    ['/v3/auth/role/grant', { name: 'coffer-vault', perm: { permType: 'READWRITE', key: b64(prefix), range_end: end.toString('base64') } }],
    ['/v3/auth/user/grant', { user: setup.vaultUser, role: 'coffer-vault' }],
    ['/v3/auth/enable', {}],
  ];
  for (const [path, body] of steps) {
    const r = await etcdPost(url, path, body, admin);
    const msg = String(r.json.message ?? r.json.error ?? '');
    if (r.status !== 200 && !/already exists|already granted/.test(msg)) throw new Error(`etcd ${path}: HTTP ${r.status} ${msg}`);
  }
}
