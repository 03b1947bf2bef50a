// The zstd (thread-pool) and xattr bindings load without their napi-rs loaders, which
// build a whole process report (process.report.getReport) in every thread that loads
// them, ~6–9 ms of CPU each (issue 13). The bindings still work: compress and
// decompress through maybeCompress/decompressBlob, and list a file's attributes.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';

const resolves = (name: string): boolean => {
  try {
    createRequire(import.meta.url).resolve(name);
    return true;
  } catch {
    return false;
  }
};
// The direct load is for Linux x64/arm64 where npm installed the glibc packages (not musl).
const supported = process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64') && ['@mongodb-js/zstd', '@napi-rs/xattr'].every((p) => resolves(`${p}-linux-${process.arch}-gnu`));

test('zstd and xattr bindings load in a new thread without a process report, and work', { skip: !supported && 'no glibc platform packages here (the loaders decide)' }, async () => {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    let reports = 0;
    const original = process.report.getReport;
    process.report.getReport = function (...args) { reports++; return original.apply(this, args); };
    (async () => {
      const c = await import(workerData.compress);
      const m = await import(workerData.fsMeta);
      const n = await import(workerData.native);
      const raw = Buffer.from('abc'.repeat(100_000));
      const { stored, flags } = await c.maybeCompress(raw, 'max');
      const back = await c.decompressBlob(stored, flags, raw.length, 'test');
      const api = m.xattrs();
      parentPort.postMessage({ reports, smaller: stored.length < raw.length, same: back.equals(raw), list: Array.isArray(api.listAttributesSync(workerData.file)), direct: [...n.directBindingsForTesting].sort() });
    })().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));
  `;
  const at = (p: string) => new URL(p, import.meta.url).href;
  const worker = new Worker(code, { eval: true, workerData: { compress: at('../src/repository/compress.js'), fsMeta: at('../src/repository/fs-meta.js'), native: at('../src/repository/native-binding.js'), file: new URL(import.meta.url).pathname } });
  const got = await new Promise<Record<string, unknown>>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await worker.terminate();
  assert.equal(got.error, undefined);
  assert.deepEqual(got, { reports: 0, smaller: true, same: true, list: true, direct: ['@mongodb-js/zstd', '@napi-rs/xattr'] });
});
