/**
 * A directory's names, sorted by bytes (spec §9: siblings in name order), for the backup
 * walk (backup.ts) and its scan-ahead thread (scan-worker.ts), which must list a
 * directory exactly alike.
 */
import { opendirSync } from 'node:fs';

/**
 * One directory's names, sorted by their bytes. Read in a stream (opendir) and kept
 * packed in one buffer (name bytes + 8 bytes each), not one object per name: the
 * format orders siblings by name, so a directory's names are all needed before the
 * first is visited, but nothing else of them is kept.
 */
export class NameList {
  readonly #bytes: Buffer;
  readonly #offs: Uint32Array;
  readonly #order: Uint32Array;
  /** `dir`'s names, sorted; `null`: none (a mount point left empty by --one-file-system). */
  constructor(dir: Buffer | null) {
    let bytes = Buffer.allocUnsafe(dir === null ? 0 : 4096);
    let offs = new Uint32Array(64);
    let n = 0;
    let used = 0;
    const d = dir === null ? null : opendirSync(dir as unknown as string, { encoding: 'buffer' as BufferEncoding, bufferSize: 128 });
    if (d) {
      try {
        for (let e = d.readSync(); e !== null; e = d.readSync()) {
          const name = e.name as unknown as Buffer;
          if (used + name.length > bytes.length) {
            const b = Buffer.allocUnsafe(Math.max(bytes.length * 2, used + name.length));
            bytes.copy(b, 0, 0, used);
            bytes = b;
          }
          if (n + 2 > offs.length) {
            const o = new Uint32Array(offs.length * 2);
            o.set(offs);
            offs = o;
          }
          name.copy(bytes, used);
          used += name.length;
          offs[++n] = used;
        }
      } finally {
        d.closeSync();
      }
    }
    this.#bytes = bytes;
    this.#offs = offs;
    const b = bytes;
    this.#order = new Uint32Array(n).map((_, i) => i).sort((x, y) => b.compare(b, offs[y]!, offs[y + 1]!, offs[x]!, offs[x + 1]!));
  }
  get length(): number {
    return this.#order.length;
  }
  /** The k-th name in sorted order (a view into the list: copy before keeping). */
  name(k: number): Buffer {
    const i = this.#order[k]!;
    return this.#bytes.subarray(this.#offs[i]!, this.#offs[i + 1]!);
  }
}
