/**
 * Repository locks (spec §11). Backups, restores and checks take a shared lock; prune
 * takes an exclusive one. A lock is a sealed object that expires unless refreshed, so
 * a crashed process blocks nobody for longer than the expiry. Acquiring is
 * write-then-look: write our lock, list the others, and back out on a conflict. Two
 * racing writers may both back out, never both proceed (given a list that shows
 * completed puts; on an eventually consistent store the window is the store's lag).
 */
import { hostname } from 'node:os';
import { ObjectKind } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import { idFromName, lockName } from './blob.js';
import type { Repository } from './repository.js';

export const LOCK_EXPIRY_MS = 30 * 60 * 1000;
const REFRESH_MS = 5 * 60 * 1000;

interface LockBody {
  exclusive: boolean;
  hostname: string;
  pid: number;
  time: number;
  expires: number;
}

export class RepositoryLock {
  #id: Buffer;
  #timer: NodeJS.Timeout | undefined;
  #repo: Repository;
  #exclusive: boolean;

  private constructor(repo: Repository, id: Buffer, exclusive: boolean) {
    this.#repo = repo;
    this.#id = id;
    this.#exclusive = exclusive;
  }

  static async acquire(repo: Repository, exclusive: boolean, now = Date.now): Promise<RepositoryLock> {
    const id = await writeLock(repo, exclusive, now());
    const lock = new RepositoryLock(repo, id, exclusive);
    try {
      const holders = await liveLocks(repo, now());
      const conflict = holders.find((h) => Buffer.compare(h.id, id) !== 0 && (exclusive || h.body.exclusive));
      if (conflict) {
        const what = conflict.body.exclusive ? 'an exclusive lock (prune)' : 'a lock';
        throw new CofferError(
          'locked',
          `the repository is in use: ${what} held by pid ${conflict.body.pid} on ${conflict.body.hostname} since ${new Date(conflict.body.time).toISOString()}; if that process is gone, the lock expires at ${new Date(conflict.body.expires).toISOString()} (or run \`coffer unlock\`)`,
        );
      }
    } catch (e) {
      await repo.backend.delete(lockName(id)).catch(() => {});
      throw e;
    }
    lock.#timer = setInterval(() => void lock.#refresh(now), REFRESH_MS);
    lock.#timer.unref();
    return lock;
  }

  async #refresh(now: () => number): Promise<void> {
    try {
      const next = await writeLock(this.#repo, this.#exclusive, now());
      const old = this.#id;
      this.#id = next;
      await this.#repo.backend.delete(lockName(old));
    } catch {
      // A failed refresh is retried at the next tick; the lock stays valid until expiry.
    }
  }

  async release(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#repo.backend.delete(lockName(this.#id));
  }
}

async function writeLock(repo: Repository, exclusive: boolean, time: number): Promise<Buffer> {
  const body: LockBody = { exclusive, hostname: hostname(), pid: process.pid, time, expires: time + LOCK_EXPIRY_MS };
  return repo.writeObject(ObjectKind.Lock, Buffer.from(JSON.stringify(body)), lockName);
}

export async function liveLocks(repo: Repository, now: number): Promise<Array<{ id: Buffer; body: LockBody }>> {
  const out: Array<{ id: Buffer; body: LockBody }> = [];
  for (const { name } of await repo.backend.list('locks/')) {
    const id = idFromName(name);
    if (!id) continue;
    let body: LockBody;
    try {
      body = JSON.parse((await repo.readObject(name, ObjectKind.Lock)).toString('utf8')) as LockBody;
    } catch (e) {
      if (CofferError.is(e, 'missing-object')) continue; // released meanwhile
      throw e;
    }
    if (typeof body.expires === 'number' && body.expires > now && !deadHere(body)) out.push({ id, body });
  }
  return out;
}

/**
 * A lock taken on this host by a process that no longer exists is stale before it
 * expires (as restic does): otherwise a prune killed with -9 would block every backup
 * for LOCK_EXPIRY_MS. (Caveat: a process in another PID namespace under the same host
 * name looks dead from here.)
 */
function deadHere(body: LockBody): boolean {
  if (body.hostname !== hostname() || !Number.isInteger(body.pid) || body.pid <= 0) return false;
  if (body.pid === process.pid) return false;
  try {
    process.kill(body.pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** Removes expired locks (and, with `all`, every lock). Returns how many went. */
export async function removeLocks(repo: Repository, all: boolean, now = Date.now()): Promise<number> {
  const live = new Set((await liveLocks(repo, now)).map((l) => l.id.toString('hex')));
  let n = 0;
  for (const { name } of await repo.backend.list('locks/')) {
    const id = idFromName(name);
    if (!id || (!all && live.has(id.toString('hex')))) continue;
    await repo.backend.delete(name);
    n++;
  }
  return n;
}
