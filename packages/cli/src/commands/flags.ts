/**
 * Option parsing that several commands share (init and backup: --pad, --compression;
 * snapshots, forget, restore, ls…: --tag/--host/--path). Kept apart from the command
 * modules so that a command loads only the engine modules it runs (issue 13).
 */
import { parseCompressionMode, type CompressionMode } from '@coffer/backup/compress';
import { parsePadMode } from '@coffer/backup/padding';
import { parseTagList, type SnapshotFilter } from '@coffer/backup/snapshot';
import { UsageError } from '../tui.js';

export interface FilterFlags {
  tag?: string[];
  host?: string[];
  path?: string[];
}

/**
 * A new snapshot's tags (`backup --tag`): `--tag a,b` is two tags, as restic reads it and
 * as every filter here (`--tag`, `--keep-tag`) splits it; a stored tag with a comma could
 * never be matched. Blank parts dropped, each tag once.
 */
export function newTags(tag: string[] | undefined): string[] {
  return [...new Set((tag ?? []).flatMap(parseTagList))];
}

/** `--tag a,b` (both) `--tag c` (or c), `--host H`…, `--path P`… (every one of them). */
export function snapshotFilter(flags: FilterFlags): SnapshotFilter {
  return {
    ...(flags.tag?.length ? { tags: flags.tag.map(parseTagList) } : {}),
    ...(flags.host?.length ? { hosts: flags.host } : {}),
    ...(flags.path?.length ? { paths: flags.path } : {}),
  };
}

/** `--pad off|auto|max` (spec §7.3); a usage error otherwise. */
export function parsePad(s: string): number {
  try {
    return parsePadMode(s);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** `--compression auto|off|max`; a usage error otherwise. */
export function parseCompression(s: string): CompressionMode {
  try {
    return parseCompressionMode(s);
  } catch (e) {
    throw new UsageError(`--compression: ${(e as Error).message.replace(/^compression: /, '')}`);
  }
}

/** Times given on the command line (`find --newest/--oldest`, `backup --time`): ISO 8601, or `YYYY-MM-DD[ HH:MM[:SS]]` read as UTC; a bare date as --newest means that day's end. */
export function parseTime(s: string, name: string, endOfDay: boolean): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$/.exec(s);
  let t: number;
  if (m) {
    t = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0));
    const back = new Date(t);
    if (back.getUTCMonth() !== +m[2]! - 1 || back.getUTCDate() !== +m[3]!) t = NaN;
    if (endOfDay && m[4] === undefined) t += 86_400_000 - 1;
  } else t = /^\d{4}-\d{2}-\d{2}T/.test(s) ? Date.parse(s) : NaN;
  if (Number.isNaN(t)) throw new UsageError(`--${name}: '${s}' is not a time (use e.g. 2026-01-31 or 2026-01-31 14:00 (UTC), or ISO 8601)`);
  return t;
}

/**
 * `backup --host NAME --time T` (restic's): the new snapshot's host name, also the host
 * whose latest snapshot of the same paths is its parent, and its time (UTC, as every
 * time here); neither given, this machine's name and now.
 */
export function snapshotIdentity(flags: { host?: string[]; time?: string }): { host?: string; now?: () => Date } {
  const hosts = flags.host ?? [];
  if (hosts.length > 1) throw new UsageError('backup: --host takes one name (the new snapshot\'s)');
  const host = hosts[0];
  // eslint-disable-next-line no-control-regex
  if (host !== undefined && (host.trim() === '' || /[\u0000-\u001f\u007f]/.test(host) || Buffer.byteLength(host) > 255)) {
    throw new UsageError(`backup: --host: ${JSON.stringify(host)} is not a host name (1 to 255 bytes, no control characters)`);
  }
  const time = flags.time !== undefined ? parseTime(flags.time, 'time', false) : undefined;
  if (time !== undefined && (time < Date.UTC(1970, 0, 1) || time >= Date.UTC(10000, 0, 1))) throw new UsageError(`backup: --time: '${flags.time}' is outside 1970–9999`);
  return { ...(host !== undefined ? { host } : {}), ...(time !== undefined ? { now: () => new Date(time) } : {}) };
}
