/**
 * Repository locks (spec §11). Backups, restores and checks take a shared lock; prune
 * and forget take an exclusive one. A lock is a sealed object that expires unless
 * refreshed (its heartbeat), so a crashed process blocks nobody for longer than the
 * expiry. Acquiring is write-then-look: write our lock, list the others; on a conflict
 * the newer lock backs out and the older one waits for it to go. Two racing writers
 * never both proceed (given a list that shows completed puts; on an eventually
 * consistent store the window is the store's lag).
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { ObjectKind } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import { onInterrupt } from '../interrupt.js';
import { idFromName, lockName } from './blob.js';
import type { Repository } from './repository.js';

export const LOCK_EXPIRY_MS = 30 * 60 * 1000;
const REFRESH_MS = 5 * 60 * 1000;
/** How long an acquirer waits for a newer conflicting lock (a racer) to back out. */
export const LOCK_RACE_WAIT_MS = 5_000;

export interface LockBody {
  exclusive: boolean;
  hostname: string;
  pid: number;
  /** When this lock object was written: its heartbeat (refreshed every REFRESH_MS). */
  time: number;
  expires: number;
  /** The kernel's boot ID (/proc/sys/kernel/random/boot_id), where there is one. */
  bootId?: string;
  /** The PID namespace (`readlink /proc/self/ns/pid`, e.g. "pid:[4026531836]"). */
  pidNamespace?: string;
}

function readProc(read: () => string): string | undefined {
  try {
    return read().trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Where this process runs, as locks record it (absent off Linux). */
export const thisProcess = {
  bootId: readProc(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8')),
  pidNamespace: readProc(() => readlinkSync('/proc/self/ns/pid')),
};

export class RepositoryLock {
  #id: Buffer;
  #timer: NodeJS.Timeout | undefined;
  #unregister: (() => void) | undefined;
  #repo: Repository;
  #exclusive: boolean;
  #heartbeat: number;

  private constructor(repo: Repository, id: Buffer, exclusive: boolean) {
    this.#repo = repo;
    this.#id = id;
    this.#exclusive = exclusive;
    this.#heartbeat = Date.now();
  }

  /**
   * Write-then-look, with an order between racing acquirers: every lock is ordered by
   * (`time`, ID). A conflicting lock older than ours wins: we back out at once. One
   * newer than ours is a racer that, having written before it looked, sees ours and backs
   * out itself (or one whose list missed our lock and now holds): we look again every
   * 100 ms for up to `waitMs`, and proceed only once no conflict is left. Before, both
   * racers backed out: a prune started while a backup was taking its lock failed the
   * backup too. Never both proceed: we proceed only on a list without the other's lock.
   */
  static async acquire(repo: Repository, exclusive: boolean, now = Date.now, waitMs = LOCK_RACE_WAIT_MS): Promise<RepositoryLock> {
    const t = now();
    const id = await writeLock(repo, exclusive, t);
    const lock = new RepositoryLock(repo, id, exclusive);
    lock.#heartbeat = t;
    // Interrupted (Ctrl-C) from here on, the process releases it before it exits.
    lock.#unregister = onInterrupt(() => lock.release());
    const olderThanOurs = (h: { id: Buffer; body: LockBody }) => h.body.time < t || (h.body.time === t && Buffer.compare(h.id, id) < 0);
    try {
      const giveUp = Date.now() + waitMs;
      for (;;) {
        const conflicts = (await liveLocks(repo, now(), id)).filter((h) => exclusive || h.body.exclusive);
        if (conflicts.length === 0) break;
        const conflict = conflicts.find(olderThanOurs) ?? conflicts[0]!;
        if (olderThanOurs(conflict) || Date.now() >= giveUp) {
          const what = conflict.body.exclusive ? 'an exclusive lock (prune)' : 'a lock';
          throw new CofferError(
            'locked',
            `the repository is in use: ${what} held by pid ${conflict.body.pid} on ${conflict.body.hostname} since ${new Date(conflict.body.time).toISOString()}; if that process is gone, the lock expires at ${new Date(conflict.body.expires).toISOString()} (or run \`coffer unlock\`)`,
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    } catch (e) {
      lock.#unregister();
      await repo.backend.delete(lockName(id)).catch(() => {});
      throw e;
    }
    lock.#timer = setInterval(() => void lock.#refresh(now), REFRESH_MS);
    lock.#timer.unref();
    return lock;
  }

  async #refresh(now: () => number): Promise<void> {
    try {
      const t = now();
      const next = await writeLock(this.#repo, this.#exclusive, t);
      const old = this.#id;
      this.#id = next;
      this.#heartbeat = t;
      await this.#repo.backend.delete(lockName(old));
    } catch {
      // A failed refresh is retried at the next tick; the lock stays valid until expiry.
    }
  }

  /**
   * Throws unless our lock object is still in the repository and unexpired. A writer
   * calls this before it writes an index or a snapshot: if someone removed the lock
   * (`coffer unlock --remove-all`, or a prune that took it for dead), a prune may have
   * deleted packs this writer wrote, and the index or snapshot would name them.
   */
  async ensureHeld(now = Date.now()): Promise<void> {
    const gone = (why: string) =>
      new CofferError('locked', `this process's repository lock ${why}; stopping before writing anything that could name deleted data (run the command again)`);
    if (now > this.#heartbeat + LOCK_EXPIRY_MS) throw gone('expired (it could not be refreshed)');
    if (!(await this.#repo.backend.stat(lockName(this.#id)))) throw gone('was removed by another process');
  }

  async release(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#unregister?.();
    await this.#repo.backend.delete(lockName(this.#id));
  }
}

async function writeLock(repo: Repository, exclusive: boolean, time: number): Promise<Buffer> {
  const body: LockBody = { exclusive, hostname: hostname(), pid: process.pid, time, expires: time + LOCK_EXPIRY_MS, ...thisProcess };
  return repo.writeObject(ObjectKind.Lock, Buffer.from(JSON.stringify(body)), lockName);
}

export async function liveLocks(repo: Repository, now: number, ours?: Uint8Array): Promise<Array<{ id: Buffer; body: LockBody }>> {
  const out: Array<{ id: Buffer; body: LockBody }> = [];
  for (const { name } of await repo.backend.list('locks/')) {
    const id = idFromName(name);
    if (!id) continue;
    // The caller's own lock, just written: not read back (a round trip to a relay).
    if (ours && Buffer.compare(id, ours) === 0) continue;
    let body: LockBody;
    try {
      body = JSON.parse((await repo.readObject(name, ObjectKind.Lock)).toString('utf8')) as LockBody;
    } catch (e) {
      if (CofferError.is(e, 'missing-object')) continue; // released meanwhile
      // A lock that fails authentication was not written with this repository's key
      // (copied in, or damaged): it locks nobody out; `coffer unlock` removes it.
      if (CofferError.is(e, 'corrupt')) {
        repo.onWarning(`ignoring ${name}: ${(e as Error).message}; \`coffer unlock\` removes it`);
        continue;
      }
      throw e;
    }
    if (typeof body.expires === 'number' && body.expires > now && !deadHere(body)) out.push({ id, body });
  }
  return out;
}

/**
 * A lock taken by a process that no longer exists is stale before it expires (as restic
 * does): otherwise a prune killed with -9 would block every backup for LOCK_EXPIRY_MS.
 * Only a process we can see can be declared dead: same host name, same boot ID and same
 * PID namespace. A backup in a container has a PID we can't look up, and another
 * machine may share our host name (a different boot ID could be a reboot or another
 * machine: we can't tell), so anything else stays live while its heartbeat (`time`,
 * rewritten every REFRESH_MS) is fresh, i.e. until it expires. A lock written by an
 * older coffer (no boot ID, no namespace) is live until it expires.
 */
export function deadHere(body: LockBody, here: { bootId?: string; pidNamespace?: string } = thisProcess): boolean {
  if (body.hostname !== hostname() || !Number.isInteger(body.pid) || body.pid <= 0) return false;
  if (here.bootId === undefined || here.pidNamespace === undefined) return false;
  if (body.bootId !== here.bootId || body.pidNamespace !== here.pidNamespace) return false;
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
