/**
 * File metadata beyond what node:fs offers directly (spec §9.2, §9.4): owner names,
 * extended attributes (and with them POSIX ACLs, which Linux keeps in the
 * `system.posix_acl_access` / `system.posix_acl_default` attributes), device numbers,
 * FIFOs and device nodes.
 *
 * Node has no xattr API. We use `@napi-rs/xattr` (an optional dependency: N-API, so one
 * binary works on every Node version; prebuilt for Linux x64/arm64 glibc and musl, macOS
 * and FreeBSD). Its calls take the path as a string and do not follow a symlink at the
 * last component (l*xattr); names that are not UTF-8 cannot be expressed to it, so such
 * files are backed up without their xattrs, with a warning. Without the package, xattrs
 * are neither read nor written and the user is told once.
 *
 * Node cannot make FIFOs or device nodes either: restore runs coreutils' `mkfifo` and
 * `mknod` on a temporary ASCII name and renames the result into place.
 */
import { promises as fs } from 'node:fs';
import { napiBinding } from './native-binding.js';
import type { Xattr } from './tree.js';

/**
 * Runs a command (mkfifo, mknod: restore only). node:child_process is loaded on first use:
 * with net and dgram it pulls in, it cost every process and thread that loads this file
 * (a backup's main thread and each chunk worker) ~6 ms to start (issue 13).
 */
async function run(cmd: string, args: string[]): Promise<void> {
  const { execFile } = await import('node:child_process');
  await new Promise<void>((resolve, reject) => execFile(cmd, args, (e) => (e ? reject(e) : resolve())));
}

interface XattrApi {
  listAttributes(path: string): Promise<string[]>;
  listAttributesSync(path: string): string[];
  getAttribute(path: string, name: string): Promise<Buffer | null>;
  getAttributeSync(path: string, name: string): Buffer | null;
  setAttribute(path: string, name: string, value: Buffer): Promise<void>;
  setAttributeSync(path: string, name: string, value: Uint8Array): void;
}

let xattrApi: XattrApi | null | undefined;

/** The xattr binding, or null when it is not installed for this platform. */
export function xattrs(): XattrApi | null {
  if (xattrApi === undefined) {
    try {
      xattrApi = napiBinding<XattrApi>('@napi-rs/xattr');
    } catch {
      xattrApi = null;
    }
  }
  return xattrApi;
}

/** The attributes of `path` (not following a final symlink), sorted by name; [] when the file system has none. */
export async function readXattrs(path: string): Promise<Xattr[]> {
  const api = xattrs();
  if (!api) return [];
  let names: string[];
  try {
    names = await api.listAttributes(path);
  } catch (e) {
    if (unsupported(e)) return [];
    throw e;
  }
  const out: Xattr[] = [];
  for (const name of names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))) {
    const value = await api.getAttribute(path, name).catch((e: unknown) => {
      if (unsupported(e)) return null;
      throw e;
    });
    if (value) out.push({ name, value: Buffer.from(value) });
  }
  return out;
}

/**
 * readXattrs with synchronous calls: one llistxattr for a file without attributes, far
 * cheaper than a thread-pool round trip when walking many small files.
 */
export function readXattrsSync(path: string): Xattr[] {
  const api = xattrs();
  if (!api) return [];
  let names: string[];
  try {
    names = api.listAttributesSync(path);
  } catch (e) {
    if (unsupported(e)) return [];
    throw e;
  }
  if (names.length === 0) return [];
  const out: Xattr[] = [];
  for (const name of names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))) {
    let value: Buffer | null;
    try {
      value = api.getAttributeSync(path, name);
    } catch (e) {
      if (unsupported(e)) continue;
      throw e;
    }
    if (value) out.push({ name, value: Buffer.from(value) });
  }
  return out;
}

/** An extended attribute that could not be set, and why. */
export interface XattrFailure {
  name: string;
  error: unknown;
}

/**
 * Sets each attribute of `list` on `path`; one that fails (too large for this file
 * system, a `trusted.` name without the privilege) does not stop the others: the
 * failures are returned, each to be reported. Throws only when there is no xattr support.
 */
export async function writeXattrs(path: string, list: readonly Xattr[]): Promise<XattrFailure[]> {
  const api = xattrs();
  if (!api) throw new Error('extended attributes are not supported here (the @napi-rs/xattr package is not installed)');
  const failed: XattrFailure[] = [];
  for (const x of list) await api.setAttribute(path, x.name, x.value).catch((error: unknown) => failed.push({ name: x.name, error }));
  return failed;
}

/** writeXattrs with synchronous calls (restore's small-file path). */
export function writeXattrsSync(path: string, list: readonly Xattr[]): XattrFailure[] {
  const api = xattrs();
  if (!api) throw new Error('extended attributes are not supported here (the @napi-rs/xattr package is not installed)');
  const failed: XattrFailure[] = [];
  for (const x of list) {
    try {
      api.setAttributeSync(path, x.name, x.value);
    } catch (error) {
      failed.push({ name: x.name, error });
    }
  }
  return failed;
}

function unsupported(e: unknown): boolean {
  const m = String((e as Error)?.message ?? e);
  return /ENOTSUP|EOPNOTSUPP|not supported|ENODATA/i.test(m);
}

/** uid → user name and gid → group name from /etc/passwd and /etc/group, read once. */
export class OwnerNames {
  #users: Map<number, string> | undefined;
  #groups: Map<number, string> | undefined;

  static async #read(file: string): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const f = line.split(':');
      const id = Number(f[2]);
      if (f.length >= 3 && f[0] && Number.isInteger(id) && !out.has(id)) out.set(id, f[0]);
    }
    return out;
  }

  /** Reads both files now, so that userOf and groupOf answer without waiting. */
  async load(): Promise<void> {
    this.#users ??= await OwnerNames.#read('/etc/passwd');
    this.#groups ??= await OwnerNames.#read('/etc/group');
  }
  /** The user name of `uid` (after `load`). */
  userOf(uid: number): string | undefined {
    return this.#users?.get(uid);
  }
  /** The group name of `gid` (after `load`). */
  groupOf(gid: number): string | undefined {
    return this.#groups?.get(gid);
  }
}

/** Linux's encoding of dev_t (glibc gnu_dev_major / gnu_dev_minor). */
export function devMajor(rdev: bigint): number {
  return Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
}
export function devMinor(rdev: bigint): number {
  return Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
}

/** Makes a FIFO or a device node at `path` (an ASCII path: the caller renames it into place). */
export async function makeNode(path: string, type: 'fifo' | 'chardev' | 'blockdev', major = 0, minor = 0): Promise<void> {
  // The child has none of our descriptors: /proc/self/fd/N must name ours, by PID.
  path = path.replace(/^\/proc\/self\//, `/proc/${process.pid}/`);
  if (type === 'fifo') await run('mkfifo', ['-m', '600', '--', path]);
  else await run('mknod', ['-m', '600', '--', path, type === 'chardev' ? 'c' : 'b', String(major), String(minor)]);
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
