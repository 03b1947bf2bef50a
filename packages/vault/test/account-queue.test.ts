// server/account-queue.ts: one task at a time per account, in call order; a failed task
// does not stop the next; other accounts do not wait; nothing is kept once idle.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AccountQueue } from '../src/server/account-queue.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('AccountQueue', () => {
  it("runs one account's tasks one at a time in call order, other accounts alongside, and forgets idle accounts", async () => {
    const q = new AccountQueue();
    const log: string[] = [];
    let running = 0;
    let most = 0;
    const task = (name: string, fail = false) => async (): Promise<string> => {
      running++;
      most = Math.max(most, running);
      log.push(`start ${name}`);
      await tick();
      await tick();
      log.push(`end ${name}`);
      running--;
      if (fail) throw new Error(name);
      return name;
    };
    const a1 = q.run('a', task('a1'));
    const a2 = q.run('a', task('a2', true));
    const b1 = q.run('b', task('b1'));
    const a3 = q.run('a', task('a3'));
    assert.equal(q.accounts, 2);
    assert.equal(await a1, 'a1');
    await assert.rejects(a2, /a2/);
    assert.equal(await a3, 'a3');
    assert.equal(await b1, 'b1');
    const a = log.filter((l) => l.endsWith('a1') || l.endsWith('a2') || l.endsWith('a3'));
    assert.deepEqual(a, ['start a1', 'end a1', 'start a2', 'end a2', 'start a3', 'end a3']);
    assert.ok(log.indexOf('start b1') < log.indexOf('end a1'), 'b does not wait for a');
    assert.equal(most, 2);
    await tick();
    assert.equal(q.accounts, 0, 'nothing kept once idle');
    // A task that throws before returning a promise fails its own call only.
    await assert.rejects(q.run('c', () => { throw new Error('sync'); }), /sync/);
    assert.equal(await q.run('c', task('c2')), 'c2');
    await tick();
    assert.equal(q.accounts, 0);
  });
});
