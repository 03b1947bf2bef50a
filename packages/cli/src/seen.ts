/**
 * Rollback detection: this device remembers the newest snapshots it has seen in each
 * repository (IDs and times, in the profile directory: `seen/<repository ID>.json`) and
 * warns when the repository later shows fewer of them or only older ones, which is
 * what deleting snapshots or putting back an old copy of the storage looks like.
 *
 * The warning is given once per change: the file then records what is there now, so a
 * legitimate `forget` on another device does not warn forever (forgets made here are
 * not reported at all). It is a tripwire for a person, not a proof: the state lives on
 * this device, and an attacker who can also roll the device back is not detected.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hex } from '@coffer/backup/blob';
import type { Repository, SnapshotRecord } from '@coffer/backup/repository';
import { profileDirOf } from './profile-dir.js';
import type { GlobalFlags } from './context.js';
import type { Io } from './tui.js';

/** How many of the newest snapshots are remembered per repository. */
export const SEEN_SNAPSHOTS = 32;

interface SeenState {
  version: 1;
  snapshots: Array<{ id: string; time: string }>;
}

function statePath(flags: GlobalFlags, io: Io, repo: Repository): string {
  return join(profileDirOf(flags.profile, io.env), 'seen', `${hex(repo.config.repositoryId)}.json`);
}

async function readState(path: string): Promise<SeenState | undefined> {
  try {
    const v = JSON.parse(await fs.readFile(path, 'utf8')) as SeenState;
    if (v?.version !== 1 || !Array.isArray(v.snapshots)) return undefined;
    return { version: 1, snapshots: v.snapshots.filter((s) => typeof s?.id === 'string' && typeof s?.time === 'string') };
  } catch {
    return undefined; // none yet (or unreadable: start over rather than fail the command)
  }
}

/**
 * Compares what the repository shows (`current`: every readable snapshot) with what
 * this device saw last time, warns on stderr about snapshots that vanished (a
 * rollback makes the newest ones vanish), and records the new view. `forgottenHere`: IDs this
 * command removed itself.
 */
export async function checkSeenSnapshots(flags: GlobalFlags, io: Io, repo: Repository, current: readonly SnapshotRecord[], forgottenHere: readonly string[] = []): Promise<void> {
  let path: string;
  try {
    path = statePath(flags, io, repo);
  } catch {
    return; // no usable profile location: nothing to compare with
  }
  const before = await readState(path);
  const now = current.map((s) => ({ id: hex(s.id), time: s.snapshot.time }));
  if (before) {
    const ids = new Set(now.map((s) => s.id));
    const gone = before.snapshots.filter((s) => !ids.has(s.id) && !forgottenHere.includes(s.id));
    // (A newest snapshot older than before is covered: the newer ones are then gone.)
    if (gone.length > 0) {
      const eg = gone.slice(0, 3).map((s) => `${s.id.slice(0, 8)} of ${s.time}`).join(', ');
      io.stderr.write(
        `coffer: warning: ${gone.length} snapshot(s) this device saw in ${repo.location} are gone (${eg}): forgotten on another device, or the storage was rolled back or tampered with\n`,
      );
    }
  }
  const keep = [...now].sort((a, b) => Date.parse(b.time) - Date.parse(a.time)).slice(0, SEEN_SNAPSHOTS);
  try {
    await fs.mkdir(join(path, '..'), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
    await fs.writeFile(tmp, JSON.stringify({ version: 1, snapshots: keep } satisfies SeenState) + '\n', { mode: 0o600 });
    await fs.rename(tmp, path);
  } catch (e) {
    io.stderr.write(`coffer: warning: cannot record the snapshots seen (${(e as Error).message}); rollback detection is off for this run\n`);
  }
}
