/**
 * `npx coffer`, `npx coffer-relay` and `npx coffer-vault` right after `npm ci` in a fresh
 * clone (issue 12.1). npm links a workspace's bin into node_modules/.bin only if the file
 * exists at install time, and dist/ is built after the install: so every bin must point at
 * a committed file (packages/PKG/bin/…), and that file must run the built code.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

// packages/cli/dist/test → the repository root
const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

function workspaceBins(): { pkg: string; name: string; file: string }[] {
  const out: { pkg: string; name: string; file: string }[] = [];
  for (const pkg of readdirSync(join(ROOT, 'packages'))) {
    const manifest = join(ROOT, 'packages', pkg, 'package.json');
    if (!existsSync(manifest)) continue;
    const bin = (JSON.parse(readFileSync(manifest, 'utf8')) as { bin?: Record<string, string> }).bin ?? {};
    for (const [name, file] of Object.entries(bin)) out.push({ pkg, name, file: join('packages', pkg, file) });
  }
  return out;
}

test('every workspace bin is a committed file outside dist/, so a fresh npm ci links it', () => {
  const bins = workspaceBins();
  assert.deepEqual(bins.map((b) => b.name).sort(), ['coffer', 'coffer-relay', 'coffer-vault']);
  const tracked = execFileSync('git', ['ls-files', '-s', '--', ...bins.map((b) => b.file)], { cwd: ROOT, encoding: 'utf8' });
  for (const b of bins) {
    assert.ok(!b.file.includes('/dist/'), `${b.name} → ${b.file}: dist/ does not exist when npm ci links bins`);
    // git ls-files -s: "<mode> <hash> <stage>\t<path>"; 100755 so the link is executable.
    const line = tracked.split('\n').find((l) => l.endsWith(`\t${b.file}`));
    assert.ok(line, `${b.file} is not committed`);
    assert.match(line, /^100755 /, `${b.file} is committed without its executable bit`);
  }
});

test('node_modules/.bin/coffer, coffer-relay and coffer-vault exist and run', () => {
  for (const b of workspaceBins()) {
    const link = join(ROOT, 'node_modules', '.bin', b.name);
    assert.ok(existsSync(link), `${link} missing: npm did not link ${b.name} (run npm ci again)`);
    assert.ok((statSync(link).mode & 0o111) !== 0, `${link} is not executable`);
  }
  const v = spawnSync(join(ROOT, 'node_modules', '.bin', 'coffer'), ['--version'], { encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stdout, /^coffer \d+\.\d+\.\d+\n$/);
  for (const name of ['coffer-relay', 'coffer-vault']) {
    const h = spawnSync(join(ROOT, 'node_modules', '.bin', name), ['--help'], { encoding: 'utf8' });
    assert.equal(h.status, 0, `${name} --help: ${h.stderr}`);
    assert.match(h.stdout, new RegExp(`^usage: ${name} `));
  }
});

test('npx coffer --version works from the repository root', () => {
  const r = spawnSync('npx', ['--no-install', 'coffer', '--version'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^coffer \d+\.\d+\.\d+\n$/);
});

test('coffer COMMAND --help shows that command only', () => {
  const bin = join(ROOT, 'packages', 'cli', 'bin', 'coffer.js');
  const r = spawnSync(process.execPath, [bin, 'backup', '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /coffer backup PATH/);
  assert.doesNotMatch(r.stdout, /coffer (restore|init|vault|account)/, 'other commands are not listed');
  assert.doesNotMatch(r.stdout, /--password-file/, 'options of other commands are not listed');
  const v = spawnSync(process.execPath, [bin, 'vault', '--help'], { encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stdout, /coffer vault enable/);
  assert.match(v.stdout, /--password-file/);
  assert.doesNotMatch(v.stdout, /coffer backup/);
  const all = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
  assert.match(all.stdout, /coffer backup PATH/);
  assert.match(all.stdout, /coffer vault enable/);
  const bad = spawnSync(process.execPath, [bin, 'nosuch', '--help'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^coffer: error: unknown command 'nosuch'/);
  // Said once (the usage error's own line adds the pointer to --help), with or without --help.
  for (const args of [['nosuch', '--help'], ['mount']]) {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.equal(r.stderr.split('see coffer --help').length - 1, 1, r.stderr);
  }
});
