/**
 * Splitting DeleGate parameter values into their fields. A separator counts only outside `{}`
 * and `[]`, so a host list can carry ports (`{*:443,*:80}`) and IPv6 literals (`[::1]:80`) inside
 * a colon-separated parameter such as `PERMIT=proto:dst:src:when`.
 */

export interface SplitOptions {
  /** At most this many fields; the last one keeps the rest of the text, separators included. */
  limit?: number;
  /** For ':' — a colon followed by `//` belongs to a URL (`http://host/`) and does not split. */
  keepUrls?: boolean;
}

export function splitTopLevel(text: string, separator: string, options: SplitOptions = {}): string[] {
  const limit = options.limit ?? Infinity;
  const fields: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length && fields.length < limit - 1; i++) {
    const c = text[i];
    if (c === '{' || c === '[') depth++;
    else if ((c === '}' || c === ']') && depth > 0) depth--;
    else if (c === separator && depth === 0) {
      if (options.keepUrls && text.startsWith('//', i + 1)) continue;
      fields.push(text.slice(start, i));
      start = i + 1;
    }
  }
  fields.push(text.slice(start));
  return fields;
}

/** `{a,b}` → `a,b`: braces that only protect a list from an outer split. */
export function stripBraces(text: string): string {
  const t = text.trim();
  return t.startsWith('{') && t.endsWith('}') ? t.slice(1, -1).trim() : t;
}
