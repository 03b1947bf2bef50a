/**
 * The profile directory, as @coffer/client's `profileDir` computes it, for the CLI's own
 * per-profile state (seen.ts) without loading @coffer/client and its OPAQUE WASM (about
 * 16 MiB) in every backup and restore (issue 13). Keep the two the same:
 * test/profile-dir.test.ts compares them.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export function profileDirOf(given: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const v = given ?? env.COFFER_PROFILE;
  const base = env.XDG_CONFIG_HOME ? join(env.XDG_CONFIG_HOME, 'coffer') : join(env.HOME ?? homedir(), '.config', 'coffer');
  if (!v) return join(base, 'default');
  if (v.includes('/') || v.startsWith('.')) return resolve(v);
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(v)) throw new Error(`profile: a name is letters, digits, - and _ (or give a directory path with a /), got "${v}"`);
  return join(base, v);
}
