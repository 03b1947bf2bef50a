// promptHidden against a fake terminal: it reads a line, and rejects cleanly when the
// terminal goes away (end, close, error) instead of hanging.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { promptHidden } from '../src/password.js';
import { UsageError } from '../src/tui.js';

function terminal(): PassThrough & { raw: boolean[]; setRawMode(mode: boolean): void } {
  const t = new PassThrough() as PassThrough & { raw: boolean[]; setRawMode(mode: boolean): void };
  t.raw = [];
  t.setRawMode = (mode) => void t.raw.push(mode);
  return t;
}
const sink = { write: () => true };

test('promptHidden reads one line in raw mode and restores the terminal', async () => {
  const tty = terminal();
  const p = promptHidden('pw: ', tty, sink);
  tty.write('secret\x7fT\r');
  assert.equal(await p, 'secreT');
  assert.deepEqual(tty.raw, [true, false]);
});

for (const [what, hangUp] of [
  ['end', (t: PassThrough) => t.end()],
  ['close', (t: PassThrough) => t.destroy()],
  ['error', (t: PassThrough) => t.destroy(new Error('EIO'))],
] as const) {
  test(`promptHidden rejects when stdin ${what}s before a line`, async () => {
    const tty = terminal();
    const p = promptHidden('pw: ', tty, sink);
    tty.write('half');
    hangUp(tty);
    await assert.rejects(p, UsageError);
    assert.deepEqual(tty.raw, [true, false]);
  });
}
