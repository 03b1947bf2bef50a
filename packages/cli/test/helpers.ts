/** What the CLI transcript tests share: a run's result, the error-line check, temporary directories. */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A refused command: exit `code`, nothing on stdout, one `coffer: error:` line matching `message` first. */
export function assertError(r: CliResult, code: number, message: RegExp): void {
  assert.equal(r.code, code, `exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, '', 'nothing on stdout');
  assert.match(r.stderr.split('\n')[0]!, /^coffer: error: /);
  assert.match(r.stderr.split('\n')[0]!, message);
}

/** A temporary directory removed after the test. */
export async function tempDir(t: TestContext, prefix: string): Promise<string> {
  const d = await fs.mkdtemp(join(tmpdir(), `coffer-${prefix}-`));
  t.after(() => fs.rm(d, { recursive: true, force: true }));
  return d;
}
