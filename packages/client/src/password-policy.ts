/**
 * What a vault password must be. The vault's guess limit (10) stops online guessing, and
 * argon2id in the OPAQUE KSF slows an attacker who somehow gets a record out of the
 * HSM boundary — but neither helps with a password guessed in the first ten tries, so
 * the rules target exactly that: length, variety, and the passwords tried first.
 *
 * Rules (in this order; the first that fails is reported):
 * 1. at least 10 characters (Unicode code points), at most 1024;
 * 2. not a single repeated character or a run like "abcdefghij" / "1234567890";
 * 3. at least 2 character classes (lowercase, uppercase, digits, other), or at least
 *    16 characters (a passphrase of plain words is fine);
 * 4. not one of the common passwords below (case-insensitive, ignoring trailing digits
 *    and punctuation), and not containing "coffer".
 * Isomorphic.
 */
import { WeakPasswordError } from './errors.js';

export const MIN_PASSWORD_LENGTH = 10;
export const MAX_PASSWORD_LENGTH = 1024;

/** Common bases of breached passwords (after stripping trailing digits/punctuation). */
const COMMON = new Set([
  'password', 'passw0rd', 'qwerty', 'qwertyuiop', 'letmein', 'welcome', 'iloveyou', 'admin', 'administrator', 'monkey', 'dragon',
  'football', 'baseball', 'sunshine', 'princess', 'trustno', 'whatever', 'starwars', 'superman', 'michael', 'shadow', 'master',
  'abc', 'abcdef', 'asdf', 'asdfgh', 'asdfghjkl', 'zxcvbn', 'zxcvbnm', 'qazwsx', 'changeme', 'secret', 'backup', 'login',
  'p@ssword', 'p@ssw0rd', 'passwort', 'motdepasse', 'contrasena', 'qwertz', 'azerty', 'football', 'liverpool', 'chelsea',
]);

/** Why `password` is too weak, or null when it passes. */
export function passwordWeakness(password: string): string | null {
  const chars = [...password];
  if (chars.length < MIN_PASSWORD_LENGTH) return `use at least ${MIN_PASSWORD_LENGTH} characters (this one has ${chars.length})`;
  if (chars.length > MAX_PASSWORD_LENGTH) return `use at most ${MAX_PASSWORD_LENGTH} characters`;
  if (new Set(chars).size === 1) return 'it is one character repeated';
  if (isRun(password)) return 'it is a simple sequence';
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/, /[^a-zA-Z0-9]/].filter((re) => re.test(password)).length;
  if (classes < 2 && chars.length < 16) return 'mix at least two kinds of characters (lowercase, uppercase, digits, symbols) or use 16 characters or more';
  const lower = password.toLowerCase();
  const base = lower.replace(/[\d\W_]+$/u, '');
  if (COMMON.has(base) || COMMON.has(lower)) return 'it is one of the most common passwords';
  if (lower.includes('coffer')) return 'it contains the name of this program';
  return null;
}

/** @throws WeakPasswordError with the reason. */
export function checkPassword(password: string): void {
  if (typeof password !== 'string') throw new TypeError('password: expected a string');
  const reason = passwordWeakness(password);
  if (reason) throw new WeakPasswordError(reason);
}

const SEQUENCES = ['01234567890123456789', 'abcdefghijklmnopqrstuvwxyz', 'qwertyuiopasdfghjklzxcvbnm'];

function isRun(s: string): boolean {
  const lower = s.toLowerCase();
  for (const seq of SEQUENCES) {
    if (seq.includes(lower) || [...seq].reverse().join('').includes(lower)) return true;
  }
  const c = [...s].map((ch) => ch.codePointAt(0)!);
  const d = c[1]! - c[0]!;
  if (Math.abs(d) !== 1) return false;
  for (let i = 2; i < c.length; i++) if (c[i]! - c[i - 1]! !== d) return false;
  return true;
}
