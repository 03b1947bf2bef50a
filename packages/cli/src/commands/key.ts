import { BackupKey, formatKeyId } from '@coffer/backup/key';
import { loadKey, openRepo, type GlobalFlags } from '../context.js';
import type { Io } from '../tui.js';

/** `coffer key generate`: a new random key on stdout (the only place it appears). */
export async function keyGenerate(flags: GlobalFlags, io: Io): Promise<number> {
  const key = BackupKey.generate();
  if (flags.json) io.stdout.write(JSON.stringify({ key: key.toDigits(), keyId: formatKeyId(key.keyId()) }) + '\n');
  else io.stdout.write(key.toDigits() + '\n');
  if (!flags.quiet) io.stderr.write('coffer: warning: this key alone decrypts your backups; store it somewhere safe and private\n');
  return 0;
}

/**
 * `coffer key show [--repo R]`: the key given (formatted) and its key ID; with --repo,
 * also its key ID in that repository (salted with the repository ID from format
 * version 3, spec §3.2), after checking that the key opens it.
 */
export async function keyShow(flags: GlobalFlags, io: Io): Promise<number> {
  const key = await loadKey(flags, io);
  let repo: { repository: string; repositoryKeyId: string; version: number } | undefined;
  if (flags.repo !== undefined) {
    const r = await openRepo(flags, io);
    repo = { repository: r.location, repositoryKeyId: formatKeyId(r.config.keyId), version: r.config.version };
  }
  if (flags.json) io.stdout.write(JSON.stringify({ key: key.toDigits(), keyId: formatKeyId(key.keyId()), ...(repo ?? {}) }) + '\n');
  else {
    io.stdout.write(`${key.toDigits()}\nkey ID ${formatKeyId(key.keyId())}\n`);
    if (repo) io.stdout.write(`key ID in ${repo.repository} ${repo.repositoryKeyId}${repo.version < 3 ? ' (a version ' + repo.version + ' repository: the same in every repository of this key)' : ''}\n`);
  }
  return 0;
}
