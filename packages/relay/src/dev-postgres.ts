/**
 * A local PostgreSQL server for development clusters (`npm run cluster`) and tests:
 * `initdb` of a fresh cluster in a temp dir (or `options.dir`),
 * `postgres` on 127.0.0.1 at a free port (trust auth, socket in the same dir), stopped
 * by its PID. Binaries from PATH or Debian's /usr/lib/postgresql/<v>/bin (.ci/run
 * installs the `postgresql` package). As root, both run as the `postgres` user (initdb
 * refuses root).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

function findBin(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(join(dir, name))) return join(dir, name);
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (existsSync(join(base, v, 'bin', name))) return join(base, v, 'bin', name);
  }
  return null;
}

export const POSTGRES_BINARIES = { initdb: findBin('initdb'), postgres: findBin('postgres') };

/** Why PostgreSQL tests cannot run here, or null. */
export function postgresMissing(): string | null {
  if (!POSTGRES_BINARIES.initdb || !POSTGRES_BINARIES.postgres) return 'PostgreSQL binaries (initdb, postgres) not found: install the postgresql package (.ci/run does)';
  return null;
}

async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * Waits until the postgres in `child` accepts connections at `url` as the server of
 * `data`: true; false when it exited first (its port taken). Throws after 30 s.
 */
async function ready(child: ChildProcess, url: string, data: string, err: () => string): Promise<boolean> {
  const deadline = Date.now() + 30_000;
  const ours = realpathSync(data);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    try {
      await c.connect();
      const dir = (await c.query<{ data_directory: string }>('SHOW data_directory')).rows[0]?.data_directory;
      await c.end();
      if (dir !== undefined && realpathSync(dir) === ours) return true;
      // Another server on this port: ours cannot bind it and exits (above).
    } catch {
      await c.end().catch(() => {});
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`postgres did not accept connections in 30 s: ${err()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface TestPostgres {
  /** postgres://coffer@127.0.0.1:PORT/postgres */
  readonly url: string;
  readonly pid: number;
  /** A fresh, empty database on this server; its URL. */
  database(name: string): Promise<string>;
  stop(): Promise<void>;
}

/**
 * NOT for production: trust authentication on 127.0.0.1 and fsync off (a development
 * cluster's accounts are disposable). Production runs its own PostgreSQL.
 */
export async function startPostgres(options: { dir?: string; /** Tests: picks each port tried (default: a free one). */ pickPort?: () => Promise<number> } = {}): Promise<TestPostgres> {
  const missing = postgresMissing();
  if (missing) throw new Error(missing);
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'coffer-pg-'));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const data = join(dir, 'data');
  let ids: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    if (!Number.isInteger(uid) || uid <= 0) throw new Error('running as root and there is no postgres user to run PostgreSQL as');
    ids = { uid, gid };
    chownSync(dir, uid, gid);
  }
  // A kept directory (options.dir) is initialised once and reused on the next start.
  if (!existsSync(join(data, 'PG_VERSION'))) {
    const init = spawnSync(POSTGRES_BINARIES.initdb!, ['-D', data, '-U', 'coffer', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], { encoding: 'utf8', ...(ids ?? {}) });
    if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  }
  // The port is free when picked, but another process may take it before postgres binds
  // it: postgres then exits (tried again on another port), or, worse, a server already
  // there answers. Ours is the one whose data directory is `data`, checked before use.
  const { child, url } = await (async () => {
    for (let attempt = 1; ; attempt++) {
      const port = await (options.pickPort ?? freePort)();
      const c = spawn(POSTGRES_BINARIES.postgres!, ['-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', dir, '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=100'], { stdio: ['ignore', 'ignore', 'pipe'], ...(ids ?? {}) });
      const closed = once(c, 'close');
      let err = '';
      c.stderr!.on('data', (d) => (err += d));
      const at = `postgres://coffer@127.0.0.1:${port}/postgres`;
      if (await ready(c, at, data, () => err)) return { child: c, url: at };
      await closed; // all of its stderr read
      if (attempt >= 5 || !/could not bind|already in use|could not create listen socket/i.test(err)) throw new Error(`postgres exited: ${err}`);
    }
  })();
  return {
    url,
    pid: child.pid!,
    async database(name) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        const db = name.replace(/[^a-z0-9_]/g, '');
        const exists = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [db]);
        if (exists.rowCount === 0) await c.query(`CREATE DATABASE ${db}`);
      } finally {
        await c.end();
      }
      return url.replace(/\/postgres$/, `/${name}`);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid!, 'SIGINT'); // fast shutdown, by PID
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await once(child, 'exit');
        clearTimeout(timer);
      }
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
