/**
 * A small tar writer for `coffer dump` (POSIX.1-2001 pax interchange format, which GNU
 * and BSD tar read): a ustar header per entry, preceded by a pax extended header ('x')
 * when ustar can't hold something exactly: a name or link over 100 bytes or not ASCII,
 * a size of 8 GiB or more, large owner IDs, a time before 1970, extended attributes.
 * Names that are not UTF-8 are written with `hdrcharset=BINARY` (POSIX.1-2008 pax), so
 * their bytes come back exactly.
 */

const BLOCK = 512;

export interface TarHeader {
  /** The entry's name in the archive (bytes; a directory's without the trailing '/'). */
  name: Buffer;
  type: 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'dir' | 'fifo';
  mode: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  size?: number;
  mtimeNs: bigint;
  /** Symlink target or hard link's archive name. */
  link?: Buffer;
  major?: number;
  minor?: number;
  xattrs?: Array<{ name: string; value: Buffer }>;
}

const typeflag: Record<TarHeader['type'], string> = { file: '0', hardlink: '1', symlink: '2', chardev: '3', blockdev: '4', dir: '5', fifo: '6' };

function isAscii(b: Buffer): boolean {
  for (const x of b) if (x >= 0x80 || x === 0) return false;
  return true;
}

function isUtf8(b: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
}

/** One pax record: "<length> <key>=<value>\n", the length counting itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let n = body.length + 1;
  while (String(n).length + body.length !== n) n = String(n).length + body.length;
  return Buffer.concat([Buffer.from(String(n)), body]);
}

function octal(buf: Buffer, offset: number, width: number, value: number): boolean {
  const s = value.toString(8);
  if (value < 0 || s.length > width - 1) return false;
  buf.write(s.padStart(width - 1, '0') + '\0', offset, 'ascii');
  return true;
}

function ustar(h: TarHeader, name: Buffer, size: number, flag: string): Buffer {
  const b = Buffer.alloc(BLOCK);
  name.copy(b, 0, 0, Math.min(100, name.length));
  octal(b, 100, 8, h.mode & 0o7777);
  octal(b, 108, 8, h.uid !== undefined && h.uid < 0o7777777 ? h.uid : 0);
  octal(b, 116, 8, h.gid !== undefined && h.gid < 0o7777777 ? h.gid : 0);
  octal(b, 124, 12, size);
  const sec = Number(h.mtimeNs / 1_000_000_000n);
  octal(b, 136, 12, sec >= 0 && sec < 8 ** 11 ? sec : 0);
  b.write(flag, 156, 'ascii');
  if (h.link && h.link.length <= 100) h.link.copy(b, 157);
  b.write('ustar\0', 257, 'ascii');
  b.write('00', 263, 'ascii');
  if (h.uname && Buffer.byteLength(h.uname) < 32 && isAscii(Buffer.from(h.uname))) b.write(h.uname, 265);
  if (h.gname && Buffer.byteLength(h.gname) < 32 && isAscii(Buffer.from(h.gname))) b.write(h.gname, 297);
  if (h.major !== undefined) octal(b, 329, 8, h.major);
  if (h.minor !== undefined) octal(b, 337, 8, h.minor);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return b;
}

/** Zero bytes that pad `n` bytes of content to a whole block. */
export function tarPadding(n: number): Buffer {
  return Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);
}

/** The end of an archive: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

/** The header block(s) of one entry: its pax header when needed, then its ustar header. */
export function tarHeader(h: TarHeader): Buffer {
  const name = h.type === 'dir' ? Buffer.concat([h.name, Buffer.from('/')]) : h.name;
  const size = h.type === 'file' ? (h.size ?? 0) : 0;
  const records: Buffer[] = [];
  // A name that fits is kept in the ustar field as raw bytes, which tar programs take
  // as they are; pax carries it (UTF-8, or BINARY when it is not) only when it is longer.
  const paxName = name.length > 100 || (!isAscii(name) && isUtf8(name));
  const paxLink = h.link !== undefined && (h.link.length > 100 || (!isAscii(h.link) && isUtf8(h.link)));
  if ((paxName && !isUtf8(name)) || (paxLink && !isUtf8(h.link!))) records.push(paxRecord('hdrcharset', Buffer.from('BINARY')));
  if (paxName) records.push(paxRecord('path', name));
  if (paxLink) records.push(paxRecord('linkpath', h.link!));
  if (size >= 8 ** 11) records.push(paxRecord('size', Buffer.from(String(size))));
  if (h.uid !== undefined && h.uid >= 0o7777777) records.push(paxRecord('uid', Buffer.from(String(h.uid))));
  if (h.gid !== undefined && h.gid >= 0o7777777) records.push(paxRecord('gid', Buffer.from(String(h.gid))));
  if (h.uname && !(Buffer.byteLength(h.uname) < 32 && isAscii(Buffer.from(h.uname)))) records.push(paxRecord('uname', Buffer.from(h.uname)));
  if (h.gname && !(Buffer.byteLength(h.gname) < 32 && isAscii(Buffer.from(h.gname)))) records.push(paxRecord('gname', Buffer.from(h.gname)));
  for (const x of h.xattrs ?? []) records.push(paxRecord(`SCHILY.xattr.${x.name}`, x.value));
  const sec = h.mtimeNs / 1_000_000_000n;
  if (records.length > 0 || h.mtimeNs < 0n || sec >= 8n ** 11n || h.mtimeNs % 1_000_000_000n !== 0n) {
    // The exact time, to the nanosecond (ustar holds whole seconds only).
    const neg = h.mtimeNs < 0n;
    const a = neg ? -h.mtimeNs : h.mtimeNs;
    const frac = String(a % 1_000_000_000n).padStart(9, '0').replace(/0+$/, '');
    records.push(paxRecord('mtime', Buffer.from(`${neg ? '-' : ''}${a / 1_000_000_000n}${frac ? `.${frac}` : ''}`)));
  }
  const main = ustar(h, name, size, typeflag[h.type]);
  if (records.length === 0) return main;
  const pax = Buffer.concat(records);
  const headerName = Buffer.from(`PaxHeaders/${name.subarray(0, 80).toString('latin1').replace(/[^\x20-\x7e]/g, '_')}`, 'latin1');
  const paxHeader = ustar({ name: headerName, type: 'file', mode: 0o644, mtimeNs: 0n }, headerName, pax.length, 'x');
  return Buffer.concat([paxHeader, pax, tarPadding(pax.length), main]);
}
