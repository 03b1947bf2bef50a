/** Where the repository and the key come from: flags first, then the environment. */
import { readFile } from 'node:fs/promises';
import { BackupKey, CofferError, LocalBackend, Repository, type StorageBackend } from '@coffer/backup';
import { UsageError, type Io } from './tui.js';

export interface GlobalFlags {
  repo?: string;
  'key-file'?: string;
  json?: boolean;
  quiet?: boolean;
}

export function repoLocation(flags: GlobalFlags, io: Io): string {
  const loc = flags.repo ?? io.env.COFFER_REPOSITORY;
  if (!loc) throw new UsageError('no repository given: use --repo DIR or set COFFER_REPOSITORY');
  return loc;
}

export function backendFor(location: string): StorageBackend {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    throw new UsageError(`repository '${location}': only local directories are supported by this version`);
  }
  return new LocalBackend(location);
}

/** The key from --key-file or COFFER_KEY, or undefined when neither is set. */
export async function loadKeyIfGiven(flags: GlobalFlags, io: Io): Promise<BackupKey | undefined> {
  if (flags['key-file'] !== undefined) {
    let text: string;
    try {
      text = await readFile(flags['key-file'], 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CofferError('invalid-argument', `cannot read key file ${flags['key-file']}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message}`);
    }
    return parseKey(text, `key file ${flags['key-file']}`);
  }
  const env = io.env.COFFER_KEY;
  if (env !== undefined && env !== '') return parseKey(env, 'COFFER_KEY');
  return undefined;
}

function parseKey(text: string, where: string): BackupKey {
  try {
    return BackupKey.parse(text);
  } catch (e) {
    if (e instanceof CofferError) throw new CofferError('invalid-key', `${where}: ${e.message}`);
    throw e;
  }
}

export async function loadKey(flags: GlobalFlags, io: Io): Promise<BackupKey> {
  const key = await loadKeyIfGiven(flags, io);
  if (!key) throw new UsageError('no key given: use --key-file FILE or set COFFER_KEY to the 64-digit key');
  return key;
}

export async function openRepo(flags: GlobalFlags, io: Io): Promise<Repository> {
  const location = repoLocation(flags, io);
  const key = await loadKey(flags, io);
  return Repository.open(backendFor(location), key);
}
