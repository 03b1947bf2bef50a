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
