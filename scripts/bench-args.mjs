/**
 * The bench scripts' command line: `--name VALUE` options and the other arguments
 * (for the A/B scripts, the roots of the builds to compare). One place, so that every
 * script reads its options the same way.
 */

/** The value after `--name`, or `dflt` when the option is absent. */
export function argString(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

/** argString as a number (`dflt` when absent). */
export function argNumber(name, dflt) {
  const v = argString(name, undefined);
  return v === undefined ? dflt : Number(v);
}

/**
 * The arguments that are neither an option (`--x`) nor the value right after one;
 * `flags` names the script's options that take no value (`--count-pkcs11`), so the
 * argument after one of them is not taken for its value.
 */
export function positionalArgs(flags = []) {
  const takesValue = (a) => a?.startsWith('--') && !flags.includes(a.slice(2));
  return process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !takesValue(all[i - 1]));
}
