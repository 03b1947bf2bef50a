// `node scripts/bench-relay-profile.mjs [--rounds N] [--mode both|relay|local] [--clients A,B] [--scale S]`
// Where the CPU of a blob backup goes (issue 13): the `coffer` CLI backs up the bench
// data set (scale S, default 0.25 = 261 MiB, shared with bench:relay) to `coffer:`
// through a local relay (loopback, local blob store) and/or to a local directory, and
// prints for every round the wall time and the CPU of each thread of the client and of
// the relay (user + system, from /proc/PID/task/*/stat; the client's threads are sampled
// every 50 ms so that threads which end before the process are counted).
//
// Node names none of its threads, so they are told apart by what they do: the main
// thread is the one whose id is the process id; the engine's chunking workers are the
// busiest of the rest; V8's platform threads (GC marking, sweeping, compiling) use user
// time only; libuv's pool (file reads and writes, fsync) mostly system time.
//
// `--clients A,B`: roots of two checkouts (each with packages/*/dist and node_modules),
// run in alternation against the same relay — an A/B of client builds in one run.
// Profilers: COFFER_BENCH_CLIENT_NODE_ARGS / COFFER_BENCH_RELAY_NODE_ARGS (node flags,
// e.g. '--cpu-prof --cpu-prof-dir=/tmp/p' or '--trace-gc'), COFFER_BENCH_CLIENT_WRAP /
// COFFER_BENCH_RELAY_WRAP (a command that runs node: e.g. a script doing
// `exec perf record -g -o FILE -- "$@"`), COFFER_BENCH_CLIENT_STDOUT (a file for the
// client's stdout, where --trace-gc writes). Data under COFFER_BENCH_DIR (default
// ./bench-work); the repositories made here are removed at the end.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argString } from './bench-args.mjs';
import { relayListening } from './relay-listening.mjs';

const rounds = Number(argString('rounds', '1'));
const mode = argString('mode', 'both');
const scale = argString('scale', '0.25');
const clients = argString('clients', root).split(',');
const work = process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work');
const data = join(work, `data0-scale${scale}`);
if (!existsSync(data)) {
  console.error(`bench-relay-profile: no data set at ${data}: run bench:relay once (it builds it) or copy it there`);
  process.exit(2);
}
const words = (s) => (s ?? '').split(' ').filter(Boolean);

const base = join(work, `relay-profile-${process.pid}`);
rmSync(base, { recursive: true, force: true });
mkdirSync(base, { recursive: true });
const keyFile = join(base, 'key');
writeFileSync(keyFile, '42'.repeat(32), { mode: 0o600 });
const relayDir = join(base, 'relay');
mkdirSync(relayDir);
writeFileSync(join(relayDir, 'link.key'), randomBytes(32).toString('hex') + '\n', { mode: 0o600 });

/** CPU seconds per thread of `pid` now: tid → { user, sys }. */
function threads(pid) {
  const out = {};
  let tids;
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
      out[tid] = { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
}

/** "main 1.10+0.40, workers 0.48+0.06 0.36+0.05, user-only 0.21 0.15 …, sys-heavy 0.10+0.06 …" */
function describe(pid, per) {
  const f = (t) => `${t.user.toFixed(2)}+${t.sys.toFixed(2)}`;
  const main = per[String(pid)] ?? { user: 0, sys: 0 };
  const rest = Object.entries(per).filter(([tid, t]) => tid !== String(pid) && t.user + t.sys >= 0.02).map(([, t]) => t);
  rest.sort((a, b) => b.user + b.sys - (a.user + a.sys));
  const userOnly = rest.filter((t) => t.sys <= t.user * 0.2);
  const sysHeavy = rest.filter((t) => t.sys > t.user * 0.2);
  const total = Object.values(per).reduce((s, t) => ({ user: s.user + t.user, sys: s.sys + t.sys }), { user: 0, sys: 0 });
  return `${f(total)} s [main ${f(main)}; mostly-user threads ${userOnly.map(f).join(' ') || '-'}; system-heavy threads ${sysHeavy.map(f).join(' ') || '-'}]`;
}

const relayWrap = words(process.env.COFFER_BENCH_RELAY_WRAP);
const relayArgs = [...words(process.env.COFFER_BENCH_RELAY_NODE_ARGS), join(root, 'packages/relay/dist/src/main.js'), 'serve'];
const relay = spawn(relayWrap[0] ?? process.execPath, relayWrap.length ? [...relayWrap.slice(1), process.execPath, ...relayArgs] : relayArgs, {
  env: {
    ...process.env,
    COFFER_RELAY_DATA_DIR: relayDir,
    COFFER_RELAY_PORT: process.env.COFFER_BENCH_RELAY_PORT ?? '0',
    COFFER_RELAY_ADMIN: '0',
    COFFER_RELAY_LINK_KEY_FILE: join(relayDir, 'link.key'),
    COFFER_RELAY_LOG_LEVEL: 'warn',
    COFFER_RELAY_MAX_OBJECT_BYTES: String(512 * 2 ** 20),
    COFFER_RELAY_MAX_IN_FLIGHT_BYTES: String(512 * 2 ** 20),
  },
  stdio: ['ignore', 'ignore', 'pipe'],
});
const url = await relayListening(relay);
// With a wrapper the process we started is the wrapper; the relay is the node below it.
const relayPid = relayWrap.length ? Number(spawnSync('pgrep', ['-n', '-P', String(relay.pid)], { encoding: 'utf8' }).stdout.trim()) || relay.pid : relay.pid;

const env = { ...process.env, COFFER_KEY: '', COFFER_REPOSITORY: '', COFFER_ACCOUNT_PASSWORD: 'bench account password 42' };
const clientWrap = words(process.env.COFFER_BENCH_CLIENT_WRAP);
const summary = [];
const modes = mode === 'both' ? ['local', 'relay'] : [mode];
try {
  for (let r = 0; r < rounds; r++) {
    for (const croot of clients) {
      const coffer = join(croot, 'packages/cli/dist/src/main.js');
      for (const m of modes) {
        let args;
        if (m === 'relay') {
          const profile = join(base, `profile-${r}-${clients.indexOf(croot)}`);
          const cli = (a) => {
            const x = spawnSync(process.execPath, [coffer, ...a, '--profile', profile, '--server', url], { env, encoding: 'utf8' });
            if (x.status !== 0) throw new Error(`coffer ${a.join(' ')}: ${x.stderr}`);
          };
          cli(['account', 'create', '-q']);
          cli(['init', '-q', '--repo', 'coffer:', '--key-file', keyFile]);
          args = ['backup', '-q', '--repo', 'coffer:', '--key-file', keyFile, '--profile', profile, '--server', url, data];
        } else {
          const repo = join(base, 'local-repo');
          rmSync(repo, { recursive: true, force: true });
          spawnSync(process.execPath, [coffer, 'init', '-q', '--repo', repo, '--key-file', keyFile], { env });
          args = ['backup', '-q', '--repo', repo, '--key-file', keyFile, data];
        }
        const nodeArgs = [...words(process.env.COFFER_BENCH_CLIENT_NODE_ARGS), coffer, ...args];
        const relay0 = threads(relayPid);
        const t0 = performance.now();
        const out = process.env.COFFER_BENCH_CLIENT_STDOUT ? openSync(process.env.COFFER_BENCH_CLIENT_STDOUT, 'a') : 'ignore';
        const child = spawn(clientWrap[0] ?? process.execPath, clientWrap.length ? [...clientWrap.slice(1), process.execPath, ...nodeArgs] : nodeArgs, { env, stdio: ['ignore', out, 'inherit'] });
        const childPid = () => (clientWrap.length ? Number(spawnSync('pgrep', ['-n', '-P', String(child.pid)], { encoding: 'utf8' }).stdout.trim()) || child.pid : child.pid);
        let pid = child.pid;
        const seen = {};
        const timer = setInterval(() => {
          if (pid === child.pid && clientWrap.length) pid = childPid();
          Object.assign(seen, threads(pid));
        }, 50);
        const code = await new Promise((res) => child.once('exit', res));
        clearInterval(timer);
        const wall = (performance.now() - t0) / 1000;
        if (code !== 0) throw new Error(`coffer backup (${m}) exited ${code}`);
        const relay1 = threads(relayPid);
        const relayDelta = {};
        for (const [tid, t] of Object.entries(relay1)) relayDelta[tid] = { user: t.user - (relay0[tid]?.user ?? 0), sys: t.sys - (relay0[tid]?.sys ?? 0) };
        const cpu = (per) => Object.values(per).reduce((s, t) => s + t.user + t.sys, 0);
        summary.push({ croot, m, wall, client: cpu(seen), relay: m === 'relay' ? cpu(relayDelta) : 0 });
        console.log(`round ${r + 1} ${m}${clients.length > 1 ? ` (${croot})` : ''}: wall ${wall.toFixed(2)} s`);
        console.log(`  client CPU (user+system) ${describe(pid, seen)}`);
        if (m === 'relay') console.log(`  relay CPU (user+system)  ${describe(relayPid, relayDelta)}`);
      }
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  for (const croot of clients) {
    for (const m of modes) {
      const xs = summary.filter((s) => s.croot === croot && s.m === m);
      console.log(`median ${m}${clients.length > 1 ? ` (${croot})` : ''}: wall ${median(xs.map((x) => x.wall)).toFixed(2)} s, client CPU ${median(xs.map((x) => x.client)).toFixed(2)} s${m === 'relay' ? `, relay CPU ${median(xs.map((x) => x.relay)).toFixed(2)} s` : ''} (${xs.length} rounds)`);
    }
  }
} finally {
  relay.kill('SIGTERM');
  if (relayPid !== relay.pid) {
    try {
      process.kill(relayPid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  await new Promise((r) => (relay.exitCode === null && relay.signalCode === null ? relay.once('exit', r) : r()));
  rmSync(base, { recursive: true, force: true });
}
