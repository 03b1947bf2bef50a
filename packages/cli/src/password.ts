/**
 * Where passwords come from: a file (--password-file / --new-password-file), the
 * environment (COFFER_PASSWORD / COFFER_NEW_PASSWORD), or the terminal without echo.
 * Never from a command-line argument (it would show in `ps` and shell history).
 */
import { readFile, stat } from 'node:fs/promises';
import { Secret } from '@coffer/protocol';
import { UsageError, type Io } from './tui.js';

export interface PasswordSource {
  readonly file: string | undefined;
  readonly envName: 'COFFER_PASSWORD' | 'COFFER_NEW_PASSWORD' | 'COFFER_ACCOUNT_PASSWORD';
  readonly flagName: '--password-file' | '--new-password-file' | '--account-password-file';
  readonly prompt: string;
  /** Ask twice on a terminal (new passwords). */
  readonly confirm?: boolean;
}

/** Whether a password can be had without failing: a file, the environment, or a terminal. */
export function passwordAvailable(src: Pick<PasswordSource, 'file' | 'envName'>, io: Io): boolean {
  return src.file !== undefined || (io.env[src.envName] ?? '') !== '' || process.stdin.isTTY === true;
}

export async function readPassword(src: PasswordSource, io: Io): Promise<Secret<string>> {
  if (src.file !== undefined) {
    let text: string;
    try {
      text = await readFile(src.file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new UsageError(`cannot read password file ${src.file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message}`);
    }
    const first = text.split(/\r?\n/)[0] ?? '';
    if (first === '') throw new UsageError(`password file ${src.file} is empty`);
    // As for --key-file: a password others can read is a password others have.
    const mode = (await stat(src.file).catch(() => null))?.mode;
    if (mode !== undefined && (mode & 0o077) !== 0) {
      io.stderr.write(`coffer: warning: password file ${src.file} (${src.flagName}) can be read by other users (mode ${(mode & 0o777).toString(8)}): anyone who reads it has the password; run chmod 600 on it\n`);
    }
    return new Secret(first);
  }
  const env = io.env[src.envName];
  if (env !== undefined && env !== '') return new Secret(env);
  const stdin = process.stdin;
  if (!stdin.isTTY) throw new UsageError(`no password: type it on a terminal, or use ${src.flagName} FILE or ${src.envName}`);
  const first = await promptHidden(`${src.prompt}: `);
  if (src.confirm) {
    const again = await promptHidden(`${src.prompt} (again): `);
    if (again !== first) throw new UsageError('the two passwords differ');
  }
  return new Secret(first);
}

/** What promptHidden needs of the terminal (process.stdin; a fake in tests). */
export interface HiddenInput extends NodeJS.EventEmitter {
  setRawMode?(mode: boolean): unknown;
  resume(): unknown;
  pause(): unknown;
  setEncoding(encoding: BufferEncoding): unknown;
}

/**
 * Reads one line from the terminal with echo off; the prompt goes to stderr. Rejects
 * (UsageError) when the terminal goes away — stdin ends, closes or fails — instead of
 * waiting forever.
 */
export function promptHidden(prompt: string, stdin: HiddenInput = process.stdin, stderr: { write(s: string): unknown } = process.stderr): Promise<string> {
  stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let line = '';
    let finished = false;
    const done = (err?: Error): void => {
      if (finished) return;
      finished = true;
      try {
        stdin.setRawMode?.(false);
      } catch {
        /* the terminal is gone */
      }
      stdin.pause();
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.off('close', onEnd);
      stdin.off('error', onError);
      stderr.write('\n');
      if (err) reject(err);
      else resolve(line);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new UsageError('interrupted'));
        if (ch === '\u0004' && line === '') return done(new UsageError('no password given'));
        if (ch === '\u007f' || ch === '\b') line = [...line].slice(0, -1).join('');
        else if (ch >= ' ') line += ch;
      }
    };
    const onEnd = (): void => done(new UsageError('the terminal closed before a password was entered'));
    const onError = (e: Error): void => done(new UsageError(`cannot read the password from the terminal: ${e.message}`));
    stdin.on('data', onData);
    stdin.on('end', onEnd);
    stdin.on('close', onEnd);
    stdin.on('error', onError);
    stdin.setRawMode?.(true);
    stdin.resume();
    stdin.setEncoding('utf8');
  });
}
