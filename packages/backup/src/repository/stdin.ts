/**
 * `coffer backup --stdin --stdin-filename NAME`: a stream (a database dump piped in)
 * stored as a snapshot of one file, NAME, as restic does (the snapshot's path is
 * `/NAME`). The stream is chunked as it arrives (spec §6.1, the same gear table and
 * parameters as files, so a dump deduplicates against the previous one) and never held
 * whole: memory is about two maximal chunks plus the blob writer's bounded windows.
 */
import { hostname, userInfo } from 'node:os';
import type { Readable } from 'node:stream';
import { FastCdc } from '../chunker/fastcdc.js';
import { ObjectKind } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import { BlobType, snapshotName } from './blob.js';
import { BlobWriter } from './blob-writer.js';
import { TreeWriter } from './backup.js';
import { RepositoryLock } from './lock.js';
import type { PadMode } from './padding.js';
import type { CompressionMode } from './compress.js';
import type { Repository } from './repository.js';
import { encodeSnapshot, type Snapshot } from './snapshot.js';
import type { FileEntry } from './tree.js';

export interface StdinBackupOptions {
  /** The stream to store (process.stdin, a child's stdout). */
  input: Readable;
  /** The file's name in the snapshot: one path segment. */
  filename: string;
  tags?: string[];
  padding?: PadMode;
  /** `--compression auto|off|max` (compress.ts); default: the repository's. */
  compression?: CompressionMode;
  now?: () => Date;
  /** As BackupOptions.host. */
  host?: string;
  onProgress?: (bytes: number, addedBytes: number) => void;
  /**
   * Called once the stream ended, before anything is committed: a rejection (the
   * command that produced the stream failed) stores no snapshot.
   */
  beforeCommit?: () => Promise<void>;
}

export interface StdinBackupResult {
  id: Buffer;
  snapshot: Snapshot;
}

/** @throws CofferError('invalid-argument') for a name that is not one plain path segment. */
export function checkStdinFilename(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0') || Buffer.byteLength(name) > 255) {
    throw new CofferError('invalid-argument', `--stdin-filename must be a plain file name (no '/', not '.' or '..', at most 255 bytes), not '${name}'`);
  }
}

export async function backupStdin(repo: Repository, opts: StdinBackupOptions): Promise<StdinBackupResult> {
  checkStdinFilename(opts.filename);
  if (repo.config.version < 2) {
    throw new CofferError('unsupported-version', `${repo.location} is a format version ${repo.config.version} repository: this coffer writes only version 2 or later; back up into a new repository (\`coffer init\`)`);
  }
  const lock = await RepositoryLock.acquire(repo, false);
  try {
    const index = await repo.index();
    const padding = opts.padding ?? repo.config.padding;
    const writer = new BlobWriter(repo, (id) => index.has(id), padding, opts.compression);
    const cdc = new FastCdc(repo.keys.gearTable, repo.config.chunker);
    try {
      const chunks: string[] = [];
      let size = 0;
      let buf = Buffer.alloc(0);
      const cutAll = async (eof: boolean) => {
        let start = 0;
        while (start < buf.length) {
          const n = cdc.cut(buf, start, buf.length, eof);
          if (n <= 0) break;
          const piece = buf.subarray(start, start + n);
          const id = repo.keys.chunkId(piece);
          await writer.add(BlobType.Data, id, Buffer.from(piece));
          chunks.push(id.toString('hex'));
          start += n;
        }
        buf = Buffer.from(buf.subarray(start));
      };
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      for await (const piece of opts.input as AsyncIterable<Buffer | string>) {
        const b = typeof piece === 'string' ? Buffer.from(piece) : piece;
        pending.push(b);
        pendingBytes += b.length;
        size += b.length;
        // Cut once enough is buffered for a maximal chunk: bounded memory, few copies.
        if (buf.length + pendingBytes >= 2 * cdc.maxSize) {
          buf = Buffer.concat([buf, ...pending]);
          pending = [];
          pendingBytes = 0;
          await cutAll(false);
          opts.onProgress?.(size, writer.addedBytes);
        }
      }
      buf = Buffer.concat([buf, ...pending]);
      pending = [];
      await cutAll(true);
      await opts.beforeCommit?.();

      const now = opts.now?.() ?? new Date();
      const mtimeNs = BigInt(now.getTime()) * 1_000_000n;
      const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
      const gid = typeof process.getgid === 'function' ? process.getgid() : 0;
      const entry: FileEntry = {
        type: 'file',
        path: opts.filename,
        rawPath: Buffer.from(opts.filename, 'utf8'),
        mode: 0o644,
        mtimeNs,
        owner: { uid, gid },
        size,
        chunks,
        inode: '',
        ctime: '',
      };
      const tree = new TreeWriter(cdc, async (raw) => {
        const id = repo.keys.chunkId(raw);
        await writer.add(BlobType.Tree, id, raw);
        return id.toString('hex');
      });
      await tree.write(entry);
      const treeIds = await tree.finish();
      await writer.finish(() => lock.ensureHeld());
      const snapshot: Snapshot = {
        version: 2,
        time: now.toISOString(),
        hostname: opts.host ?? hostname(),
        username: safeUser(),
        paths: [`/${opts.filename}`],
        tags: opts.tags ?? [],
        tree: treeIds,
        stats: { files: 1, dirs: 0, bytes: size, addedBytes: writer.addedBytes, newChunks: writer.newBlobs },
      };
      // Written last: only now does the snapshot exist (spec §12).
      await lock.ensureHeld();
      const id = await repo.writeObject(ObjectKind.Snapshot, encodeSnapshot(snapshot, padding), snapshotName);
      await repo.backend.sync();
      opts.onProgress?.(size, writer.addedBytes);
      return { id, snapshot };
    } catch (e) {
      await writer.abort();
      throw e;
    }
  } finally {
    await lock.release().catch(() => {});
  }
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return '';
  }
}
