/**
 * @coffer/backup — the backup engine: the backup key, sealed objects, content-defined
 * chunking, the repository and its storage backends. Formats: spec/backup-format.md.
 */
export { BackupKey, formatKeyId } from './crypto/backup-key.js';
export { BackupLabel } from './crypto/labels.js';
export {
  ObjectKind,
  ObjectSealer,
  ObjectOpener,
  sealObject,
  openObject,
  decodeHeader,
  encodeHeader,
  segmentRange,
  openRange,
  sealedLength,
  plainLength,
  SEGMENT_BYTES,
  HEADER_BYTES,
  TAG_BYTES,
  type ObjectHeader,
} from './crypto/sealed-object.js';
export { RepositoryKeys } from './crypto/repository-keys.js';
export { FastCdc, DEFAULT_CHUNKER, type ChunkerParams } from './chunker/fastcdc.js';
export { CofferError, DecryptionError, type CofferErrorCode } from './errors.js';
export type { StorageBackend, ObjectInfo, ObjectReader, ObjectWriter, ByteRange } from './storage/backend.js';
export { LocalBackend } from './storage/local.js';
export { S3Backend, isLoopbackEndpoint, parseS3Location, type S3BackendOptions, type S3Credentials, type S3Location } from './storage/s3.js';
export { Repository, type SnapshotRecord, type InitOptions } from './repository/repository.js';
export { Compression } from './repository/config.js';
export { COMPRESSION_LEVEL, COMPRESSION_MODES, defaultCompression, parseCompressionMode, type CompressionMode } from './repository/compress.js';
export { backup, tuneHeapForBackup, type BackupOptions, type BackupProgress, type BackupResult, type BackupWarning } from './repository/backup.js';
export { restore, type RestoreOptions, type RestoreProgress, type RestoreResult, type RestoreWarning } from './repository/restore.js';
export { PadMode, padme, paddedLength, parsePadMode } from './repository/padding.js';
export { LOCK_EXPIRY_MS, RepositoryLock, removeLocks, type LockBody } from './repository/lock.js';
export { isEmptyFilter, matchesFilter, parseTagList, type Snapshot, type SnapshotFilter, type SnapshotStats } from './repository/snapshot.js';
export type { TreeEntry, FileEntry, DirEntry, SymlinkEntry, HardlinkEntry, SpecialEntry, Owner, Xattr } from './repository/tree.js';
export { hex, packName, indexName, snapshotName } from './repository/blob.js';
export { check, parseReadDataSubset, selectSubset, type CheckResult, type CheckProblem, type CheckOptions, type ReadDataSubset } from './repository/check.js';
export { prune, type PruneResult, type PruneOptions, type PruneProgress } from './repository/prune.js';
export {
  applyPolicy,
  forgetSnapshots,
  isEmptyPolicy,
  parseDuration,
  parseGroupBy,
  formatDuration,
  subtractDuration,
  DEFAULT_GROUP_BY,
  type Duration,
  type GroupBy,
  type PolicyGroup,
  type PolicyResult,
  type RetentionPolicy,
} from './repository/forget.js';
export { blobReaderLimits } from './repository/blob-reader.js';
export {
  SnapshotPaths,
  SubtreePicker,
  compareListingOrder,
  compileGlob,
  diffSnapshots,
  dumpFile,
  dumpSnapshot,
  escapePath,
  findInSnapshots,
  findSnapshotFiltered,
  listSnapshot,
  snapshotStats,
  splitSnapshotRef,
  unescapePath,
  type Change,
  type ChangeKind,
  type DiffCounts,
  type DiffResult,
  type DumpResult,
  type FindHit,
  type FindOptions,
  type ListedEntry,
  type Selection,
  type StatsMode,
  type StatsResult,
} from './repository/browse.js';
export { TAR_END, tarHeader, tarPadding, type TarHeader } from './repository/tar.js';
export {
  repairIndex,
  repairSnapshots,
  repairPacks,
  type RepairIndexOptions,
  type RepairIndexResult,
  type RepairPacksResult,
  type RepairSnapshotsOptions,
  type RepairSnapshotsResult,
  type SnapshotRepair,
} from './repository/repair.js';
export {
  PatternList,
  RestoreSelection,
  backupExcluder,
  eitherExcludes,
  listedSelection,
  pathText,
  readFilesFrom,
  readPatternFile,
  snapshotPathOf,
  type BackupSelectionOptions,
  type PatternRule,
  type RestoreSelectionOptions,
} from './repository/filter.js';
export { backupStdin, checkStdinFilename, type StdinBackupOptions, type StdinBackupResult } from './repository/stdin.js';
export { backupDryRun, type DryRunOptions, type DryRunResult } from './repository/dry-run.js';
export { copySnapshots, type CopyOptions, type CopyProgress, type CopyResult, type CopiedSnapshot } from './repository/copy.js';
