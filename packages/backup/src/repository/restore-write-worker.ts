/**
 * A restore writer thread (restore-writer.ts): writes whole small files, a batch at a
 * time, with the same synchronous calls and in the same order as restore's main-thread
 * path (spec §9.4): exclusive no-follow create of the temporary name, write, owner,
 * mode, times, close, rename into place (sent no temporary name, the file is created
 * under its own name and not renamed: a staged restore, restore.ts). Paths arrive as
 * bytes naming entries through the main thread's directory handles
 * (`/proc/self/fd/N/name`): descriptors are shared
 * by every thread of the process, and the main thread holds each handle open until the
 * batch is answered.
 *
 * A file sent as its blob's stored form is unpadded, decompressed and checked against
 * the blob's ID (HMAC under the chunk-ID key, spec §6.2) before its temporary file is
 * created: a blob that fails is the file's failure (CORRUPT_BLOB), and nothing is written.
 *
 * It touches only the paths it is given and reports, per file, what the main thread
 * must say (a warning, a replaced file); the first failure ends the batch.
 */
import { chunkIdKeyOf, type ChunkIdKey, type ChunkIdKeySpec } from '../crypto/repository-keys.js';
import { closeSync, constants as fsc, fchmodSync, fchownSync, futimesSync, lstatSync, openSync, renameSync, writeSync } from 'node:fs';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { checkStoredBlob } from './restore-check.js';
import { errorInfo, FILE_HEADER, RAW_DATA, type FileNote, type WriteBatch, type WriteBatchResult } from './restore-writer.js';

const port = parentPort!;

const setup = workerData as { answers: MessagePort; chunkIdKey?: ChunkIdKeySpec };
const chunkIdKey: ChunkIdKey | undefined = setup.chunkIdKey ? chunkIdKeyOf(setup.chunkIdKey) : undefined;

/** Where compressed blobs are decompressed (the writer threads get blobs under 128 KiB raw: restore.ts). */
let scratch = Buffer.allocUnsafeSlow(128 * 1024);

function run(batch: WriteBatch): WriteBatchResult {
  const buf = Buffer.from(batch.bytes.buffer, batch.bytes.byteOffset, batch.bytes.byteLength);
  const notes: FileNote[] = [];
  let at = 0;
  for (let i = 0; i < batch.count; i++) {
    const tmpLen = buf.readUInt32LE(at);
    const destLen = buf.readUInt32LE(at + 4);
    const dataLen = buf.readUInt32LE(at + 8);
    const mode = buf.readUInt32LE(at + 12);
    const uid = buf.readInt32LE(at + 16);
    const gid = buf.readInt32LE(at + 20);
    const how = buf.readUInt32LE(at + 24);
    const overwrite = (how & 1) !== 0;
    const exactMode = (how & 2) !== 0;
    const timeLen = buf.readUInt32LE(at + 28);
    const blobFlags = buf.readUInt32LE(at + 32);
    const rawLen = buf.readUInt32LE(at + 36);
    const idLen = buf.readUInt32LE(at + 40);
    at += FILE_HEADER;
    const tmp = buf.subarray(at, (at += tmpLen));
    const dest = buf.subarray(at, (at += destLen));
    const stored = buf.subarray(at, (at += dataLen));
    const time = buf.toString('latin1', at, (at += timeLen));
    const id = buf.subarray(at, (at += idLen));
    let note: FileNote | undefined;
    try {
      // A compressed blob is decompressed into this thread's one buffer (written out at
      // once, never kept), not a new buffer per file.
      if (blobFlags !== RAW_DATA && rawLen > scratch.length) scratch = Buffer.allocUnsafeSlow(rawLen);
      const data = blobFlags === RAW_DATA ? stored : checkStoredBlob(stored, blobFlags, rawLen, id, chunkIdKey, scratch);
      // No temporary name: the file is made under its own name (a staged restore, restore.ts).
      const direct = tmpLen === 0;
      const fd = openSync(direct ? dest : tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, exactMode ? mode : 0o600);
      try {
        for (let w = 0; w < data.length; ) w += writeSync(fd, data, w, data.length - w, w);
        if (uid >= 0) {
          try {
            fchownSync(fd, uid, gid);
          } catch (e) {
            (note ??= { i }).ownerError = errorInfo(e);
          }
        }
        if (!exactMode) fchmodSync(fd, mode);
        try {
          futimesSync(fd, time, time);
        } catch (e) {
          (note ??= { i }).timeError = errorInfo(e);
        }
      } finally {
        closeSync(fd);
      }
      if (!direct) {
        if (overwrite && lstatSync(dest, { throwIfNoEntry: false }) !== undefined) (note ??= { i }).existed = true;
        renameSync(tmp, dest);
      }
    } catch (e) {
      if (note) notes.push(note);
      return { id: batch.id, bytes: batch.bytes, done: i, notes, error: errorInfo(e) };
    }
    if (note) notes.push(note);
  }
  return { id: batch.id, bytes: batch.bytes, done: batch.count, notes };
}

/** Answers go on their own port, which the main thread can poll while it is busy (restore-writer.ts). */
const answers = setup.answers;
port.on('message', (batch: WriteBatch) => {
  const r = run(batch);
  answers.postMessage(r, [r.bytes.buffer as ArrayBuffer]);
});
