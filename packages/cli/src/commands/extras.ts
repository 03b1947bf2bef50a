/** `coffer copy`: snapshots from another repository into this one (issue 12). */
import { copySnapshots, type CopyProgress } from '@coffer/backup/copy';
import { formatKeyId } from '@coffer/backup/key';
import { openRepo, openSourceRepo, type GlobalFlags, type SourceFlags } from '../context.js';
import { ExitCode, fmtBytes, type Io } from '../tui.js';

/** A one-line progress display on a terminal's stderr: snapshots done and bytes read. */
class CopyProgressLine {
  readonly #io: Io;
  readonly #enabled: boolean;
  #drawn = false;
  constructor(io: Io, enabled: boolean) {
    this.#io = io;
    this.#enabled = enabled && io.stderr.isTTY === true;
  }
  update(p: CopyProgress): void {
    if (!this.#enabled) return;
    const of = p.totalBytes !== undefined ? ` (this one: ${fmtBytes(p.totalBytes)})` : '';
    const line = `copying snapshot ${Math.min(p.snapshots + 1, p.totalSnapshots)}/${p.totalSnapshots}${of}, ${fmtBytes(p.bytes)} read`;
    const cols = this.#io.stderr.columns ?? 100;
    this.#io.stderr.write(`\r${line.slice(0, cols - 1)}\x1b[K`);
    this.#drawn = true;
  }
  done(): void {
    if (this.#drawn) this.#io.stderr.write('\r\x1b[K');
    this.#drawn = false;
  }
}

/**
 * `coffer copy [SNAPSHOT…] --from-repo R --from-key-file F`: copies the given snapshots
 * (all by default) from R into --repo; a snapshot already copied is skipped.
 */
export async function copyCmd(flags: GlobalFlags & SourceFlags, refs: string[], io: Io): Promise<number> {
  const src = await openSourceRepo(flags, io);
  const dst = await openRepo(flags, io);
  // A snapshot or index of either repository that could not be read was skipped with a
  // warning: the copy is then incomplete, exit 3 (done, with warnings), so that a job
  // copying off-site notices, as a backup that could not read some files does.
  let warned = 0;
  for (const repo of [src, dst]) {
    const shown = repo.onWarning;
    repo.onWarning = (m) => {
      warned++;
      shown(m);
    };
  }
  const bar = new CopyProgressLine(io, !flags.json && !flags.quiet);
  let r;
  try {
    r = await copySnapshots(src, dst, { ...(refs.length > 0 ? { snapshots: refs } : {}), onProgress: (p) => bar.update(p) });
  } finally {
    bar.done();
  }
  if (flags.json) {
    io.stdout.write(JSON.stringify({ from: src.location, to: dst.location, fromKeyId: formatKeyId(src.config.keyId), copied: r.copied, skipped: r.skipped, warnings: warned }) + '\n');
    return warned > 0 ? ExitCode.Incomplete : ExitCode.Ok;
  }
  // stdout: the new snapshot IDs (data); the story on stderr.
  for (const c of r.copied) io.stdout.write(c.id + '\n');
  if (!flags.quiet) {
    for (const c of r.copied) io.stderr.write(`copied snapshot ${c.source.slice(0, 8)} as ${c.id.slice(0, 8)}: ${fmtBytes(c.addedBytes)} added\n`);
    for (const s of r.skipped) io.stderr.write(`snapshot ${s.source.slice(0, 8)} is already in ${dst.location} (as ${s.existing.slice(0, 8)})\n`);
    io.stderr.write(`copied ${r.copied.length} snapshot(s) from ${src.location} to ${dst.location}, skipped ${r.skipped.length}\n`);
  }
  if (warned > 0) io.stderr.write(`coffer: warning: ${warned} warning(s) above: what could not be read was not copied\n`);
  return warned > 0 ? ExitCode.Incomplete : ExitCode.Ok;
}
