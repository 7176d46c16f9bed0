/**
 * Help for the usual mistakes on a command line: "did you mean" for a misspelt parameter name or
 * keyword, the shell's brace expansion splitting an unquoted `{a,b}`.
 */
/** Levenshtein distance, bounded work: both words are short (names and keywords). */
function distance(a: string, b: string): number {
  if (a.length > 64 || b.length > 64) return Math.max(a.length, b.length);
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      const swap =
        i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1] ? Math.min(row[j - 1]! + 1, prev) : Infinity;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1), swap);
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** The closest candidate when it is close enough to be a typo (case-insensitive), else undefined. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(w, c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  const allowed = w.length <= 3 ? 1 : w.length <= 6 ? 2 : 3;
  return best !== undefined && bestD <= allowed && bestD < w.length ? best : undefined;
}

/** `; did you mean CACHE?` or ''. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const c = closest(word, candidates);
  return c === undefined ? '' : `did you mean ${c}? `;
}

/**
 * Adjacent arguments `NAME=pre a suf`, `NAME=pre b suf` of a parameter that takes one value are
 * what bash makes of an unquoted `NAME=pre{a,b}suf`: give back the argument as it was typed.
 */
export function braceSplit(args: readonly string[], name: string): string | undefined {
  const values = args.filter((a) => a.slice(0, a.indexOf('=')).toUpperCase() === name).map((a) => a.slice(a.indexOf('=') + 1));
  if (values.length < 2) return undefined;
  let pre = 0;
  const first = values[0]!;
  while (pre < first.length && values.every((v) => v[pre] === first[pre])) pre++;
  let suf = 0;
  while (suf < first.length - pre && values.every((v) => v.length - suf - 1 >= pre && v[v.length - suf - 1] === first[first.length - suf - 1])) suf++;
  const mids = values.map((v) => v.slice(pre, v.length - suf));
  return `${name}=${first.slice(0, pre)}{${mids.join(',')}}${suf > 0 ? first.slice(first.length - suf) : ''}`;
}
