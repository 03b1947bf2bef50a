/**
 * The address a `coffer-relay` child process listens on, read from the line it prints to
 * stderr once it is up (the bench scripts start it with port 0). Rejects, with what the
 * relay printed, if it exits first. Keeps reading stderr, so the relay never blocks on it.
 */
export function relayListening(child, name = 'coffer-relay') {
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      err += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(err);
      if (m) resolve(m[1]);
    });
    child.once('exit', (c) => reject(new Error(`${name} exited ${c}: ${err.trim()}`)));
  });
}
