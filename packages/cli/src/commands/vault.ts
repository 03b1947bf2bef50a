import { formatKeyId } from '@coffer/backup/key';
import type { ClientStatus } from '@coffer/client';
import { openClient, type GlobalFlags } from '../context.js';
import { readPassword } from '../password.js';
import { UsageError, type Io } from '../tui.js';

export interface VaultFlags extends GlobalFlags {
  key?: boolean;
  'password-file'?: string;
  'new-password-file'?: string;
  'guess-limit'?: string;
}

const PASSWORD = { envName: 'COFFER_PASSWORD', flagName: '--password-file' } as const;
const NEW_PASSWORD = { envName: 'COFFER_NEW_PASSWORD', flagName: '--new-password-file' } as const;

/** `coffer vault enable [--key]`: password mode (default) or key mode. */
export async function vaultEnable(flags: VaultFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  if (flags.key) {
    if (flags['password-file'] !== undefined || flags['guess-limit'] !== undefined) throw new UsageError('vault enable --key: takes no password');
    const wasPassword = client.profile.state.mode === 'password';
    const digits = await client.enableKey();
    const keyId = formatKeyId(client.backupKey()!.keyId());
    if (flags.json) io.stdout.write(JSON.stringify({ mode: 'key', account: client.profile.state.account ?? null, key: digits, keyId }) + '\n');
    else io.stdout.write(digits + '\n');
    if (!flags.quiet) {
      io.stderr.write('coffer: warning: this 64-digit key alone decrypts your backups: write it down and keep it safe\n');
      if (wasPassword) io.stderr.write('coffer: warning: password backups are off: the vault erased the record, the password no longer recovers the key\n');
    }
    return 0;
  }
  let guessLimit: number | undefined;
  if (flags['guess-limit'] !== undefined) {
    if (!/^\d+$/.test(flags['guess-limit']) || Number(flags['guess-limit']) < 1 || Number(flags['guess-limit']) > 255) throw new UsageError(`--guess-limit needs a number 1..255, got '${flags['guess-limit']}'`);
    guessLimit = Number(flags['guess-limit']);
  }
  void client.account; // logged in before asking for a password
  const pw = await readPassword({ ...PASSWORD, file: flags['password-file'], prompt: 'new vault password', confirm: true }, io);
  const k = await client.enablePassword(pw, guessLimit !== undefined ? { guessLimit } : {});
  const keyId = formatKeyId(k.keyId());
  if (flags.json) io.stdout.write(JSON.stringify({ mode: 'password', account: client.account, keyId }) + '\n');
  else if (!flags.quiet) io.stderr.write(`password backups enabled for ${client.account} (key ID ${keyId}); back up with --repo coffer:\n`);
  return 0;
}

/** `coffer vault recover`: the backup key from the password, kept in this profile. */
export async function vaultRecover(flags: VaultFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  void client.account;
  const pw = await readPassword({ ...PASSWORD, file: flags['password-file'], prompt: 'vault password' }, io);
  const k = await client.recover(pw);
  const keyId = formatKeyId(k.keyId());
  if (flags.json) io.stdout.write(JSON.stringify({ account: client.account, keyId }) + '\n');
  else if (!flags.quiet) io.stderr.write(`recovered the backup key for ${client.account} (key ID ${keyId}); restore with --repo coffer:\n`);
  return 0;
}

/** `coffer vault change-password`. */
export async function vaultChangePassword(flags: VaultFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  void client.account;
  const oldPw = await readPassword({ ...PASSWORD, file: flags['password-file'], prompt: 'current vault password' }, io);
  const newPw = await readPassword({ ...NEW_PASSWORD, file: flags['new-password-file'], prompt: 'new vault password', confirm: true }, io);
  await client.changePassword(oldPw, newPw);
  if (flags.json) io.stdout.write(JSON.stringify({ account: client.account, changed: true }) + '\n');
  else if (!flags.quiet) io.stderr.write(`password changed for ${client.account}: the old one no longer works\n`);
  return 0;
}

/**
 * `coffer vault disable`: the vault erases the record. It needs proof: this device's
 * backup key, or else the vault password (asked for, or --password-file).
 */
export async function vaultDisable(flags: VaultFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  if (client.backupKey()) await client.disable();
  else await client.disable(await readPassword({ ...PASSWORD, file: flags['password-file'], prompt: 'vault password (this device holds no backup key)' }, io));
  if (flags.json) io.stdout.write(JSON.stringify({ account: client.account, mode: 'off' }) + '\n');
  else if (!flags.quiet) {
    io.stderr.write(`password backups disabled for ${client.account}: the vault erased the record\n`);
    if (client.backupKey()) io.stderr.write('coffer: warning: this device still holds the backup key; `coffer vault enable --key` shows it as 64 digits\n');
  }
  return 0;
}

/** `coffer vault status`. */
export async function vaultStatus(flags: VaultFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  const s: ClientStatus = await client.status();
  if (flags.json) {
    io.stdout.write(JSON.stringify(s) + '\n');
    return 0;
  }
  const vault = s.vault === null ? 'unknown (not logged in)' : s.vault.state === 'active' ? (s.vault.guessesRemaining === null ? `enabled (limit ${s.vault.guessLimit} guesses; how many are left is shown only to a device holding the backup key)` : `enabled, ${s.vault.guessesRemaining} of ${s.vault.guessLimit} guesses left`) : s.vault.state === 'locked' ? 'locked: the key was erased after too many wrong guesses' : 'not enabled';
  io.stdout.write(
    [
      `profile   ${s.profile}`,
      `server    ${s.server ?? '-'}`,
      `account   ${s.account ?? '-'}`,
      `mode      ${s.mode}`,
      `key       ${s.keyId ? `on this device (key ID ${s.keyId})` : 'not on this device'}`,
      `vault     ${vault}`,
    ].join('\n') + '\n',
  );
  return 0;
}
