import { BackupKey, formatKeyId } from '@coffer/backup';
import { loadKey, type GlobalFlags } from '../context.js';
import type { Io } from '../tui.js';

/** `coffer key generate`: a new random key on stdout (the only place it appears). */
export async function keyGenerate(flags: GlobalFlags, io: Io): Promise<number> {
  const key = BackupKey.generate();
  if (flags.json) io.stdout.write(JSON.stringify({ key: key.toDigits(), keyId: formatKeyId(key.keyId()) }) + '\n');
  else io.stdout.write(key.toDigits() + '\n');
  if (!flags.quiet) io.stderr.write('coffer: warning: this key alone decrypts your backups; store it somewhere safe and private\n');
  return 0;
}

/** `coffer key show`: the key given (formatted) and its key ID. */
export async function keyShow(flags: GlobalFlags, io: Io): Promise<number> {
  const key = await loadKey(flags, io);
  if (flags.json) io.stdout.write(JSON.stringify({ key: key.toDigits(), keyId: formatKeyId(key.keyId()) }) + '\n');
  else io.stdout.write(`${key.toDigits()}\nkey ID ${formatKeyId(key.keyId())}\n`);
  return 0;
}
