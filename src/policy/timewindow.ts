/**
 * Weekday and time-of-day windows for PERMIT/REJECT's WHEN field:
 * `mon-fri/0900-1800,sat/1000-1300`, `0900-1800` (every day), `mon,wed/0800-0900`, `sat,sun`
 * (whole days), `2200-0600` (across midnight: the window starts on the named day and runs into
 * the next morning). Times are HHMM, end exclusive, `2400` allowed as an end. Evaluated in the
 * machine's time zone or a named IANA zone, through Intl.DateTimeFormat.
 */
import type { TimeWindow } from '../config/types.js';
import { ConfigError } from '../config/types.js';

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
const MINUTES_PER_DAY = 24 * 60;

interface Span {
  /** Bit i set = the window starts on weekday i (0 = Sunday). */
  days: number;
  /** Minutes since midnight, start inclusive, end exclusive; end < start runs past midnight. */
  start: number;
  end: number;
}

const ALL_DAYS = 0b1111111;

export function parseTimeWindow(fullText: string, param: string, timeZone?: string): TimeWindow {
  // `WINDOW@Zone/Name` names the window's own time zone, which TIMEZONE= does not change.
  const at = fullText.indexOf('@');
  const text = at < 0 ? fullText : fullText.slice(0, at);
  const ownZone = at < 0 ? undefined : fullText.slice(at + 1).trim();
  if (ownZone !== undefined && ownZone === '') {
    throw new ConfigError(param, `bad time window ${JSON.stringify(fullText)}: empty time zone after @`);
  }
  const fail = (why: string): never => {
    throw new ConfigError(param, `bad time window ${JSON.stringify(text)}: ${why}; expected e.g. mon-fri/0900-1800,sat/1000-1300`);
  };
  const spans: Span[] = [];
  let pendingDays = 0;
  const terms = text.trim().toLowerCase().split(',');
  if (terms.length > 64) fail('too many terms');
  for (const raw of terms) {
    const term = raw.trim();
    if (term === '') fail('empty term');
    const slash = term.indexOf('/');
    if (slash >= 0) {
      // `DAYS/TIMES`: the days named so far (`mon,wed/...`) join this term's days.
      const days = pendingDays | parseDays(term.slice(0, slash), fail);
      pendingDays = 0;
      for (const t of term.slice(slash + 1).split('+')) spans.push({ days, ...parseTimes(t, fail) });
    } else if (/^\d/.test(term)) {
      if (pendingDays) fail(`days before ${JSON.stringify(term)} need a / as in mon,wed/0900-1800`);
      spans.push({ days: ALL_DAYS, ...parseTimes(term, fail) });
    } else {
      pendingDays |= parseDays(term, fail);
    }
  }
  // Days with no time: the whole of those days.
  if (pendingDays) spans.push({ days: pendingDays, start: 0, end: MINUTES_PER_DAY });
  if (spans.length === 0) fail('empty');
  const zone = ownZone ?? timeZone;
  return new ParsedTimeWindow(fullText, spans, clockFor(zone, param), ownZone !== undefined, param);
}

function parseDays(text: string, fail: (why: string) => never): number {
  const day = (name: string): number => {
    const i = DAYS.indexOf(name.trim().slice(0, 3) as (typeof DAYS)[number]);
    // Accept `mon` and full names (`monday`), nothing else.
    if (i < 0 || !fullDayName(DAYS[i]!).startsWith(name.trim())) fail(`unknown day ${JSON.stringify(name)}`);
    return i;
  };
  if (text.trim() === '*') return ALL_DAYS;
  const dash = text.indexOf('-');
  if (dash < 0) return 1 << day(text);
  // A range may wrap (`fri-mon`).
  const from = day(text.slice(0, dash));
  const to = day(text.slice(dash + 1));
  let bits = 0;
  for (let i = from; ; i = (i + 1) % 7) {
    bits |= 1 << i;
    if (i === to) break;
  }
  return bits;
}

function fullDayName(short: string): string {
  return { sun: 'sunday', mon: 'monday', tue: 'tuesday', wed: 'wednesday', thu: 'thursday', fri: 'friday', sat: 'saturday' }[short]!;
}

function parseTimes(text: string, fail: (why: string) => never): { start: number; end: number } {
  const m = /^(\d{4})-(\d{4})$/.exec(text.trim());
  if (!m) return fail(`expected HHMM-HHMM, got ${JSON.stringify(text)}`);
  const minutes = (hhmm: string, isEnd: boolean): number => {
    const h = Number(hhmm.slice(0, 2));
    const mm = Number(hhmm.slice(2));
    if (mm > 59 || h > 24 || (h === 24 && (mm !== 0 || !isEnd))) fail(`bad time ${hhmm}`);
    return h * 60 + mm;
  };
  const start = minutes(m[1]!, false);
  const end = minutes(m[2]!, true);
  if (start === end) fail(`empty time range ${text}`);
  return { start, end };
}

type Clock = (date: Date) => { weekday: number; minute: number };

function clockFor(timeZone: string | undefined, param: string): Clock {
  if (timeZone === undefined) {
    return (d) => ({ weekday: d.getDay(), minute: d.getHours() * 60 + d.getMinutes() });
  }
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  } catch {
    throw new ConfigError(param, `unknown time zone ${JSON.stringify(timeZone)}; expected an IANA name such as Europe/Paris`);
  }
  return (d) => {
    let weekday = 0;
    let hour = 0;
    let minute = 0;
    for (const p of format.formatToParts(d)) {
      if (p.type === 'weekday') weekday = DAYS.indexOf(p.value.toLowerCase().slice(0, 3) as (typeof DAYS)[number]);
      else if (p.type === 'hour') hour = Number(p.value) % 24;
      else if (p.type === 'minute') minute = Number(p.value);
    }
    return { weekday, minute: hour * 60 + minute };
  };
}

class ParsedTimeWindow implements TimeWindow {
  constructor(
    readonly source: string,
    private readonly spans: readonly Span[],
    private readonly clock: Clock,
    private readonly ownZone: boolean,
    private readonly param: string,
  ) {}

  inZone(timeZone: string): TimeWindow {
    if (this.ownZone) return this;
    return new ParsedTimeWindow(this.source, this.spans, clockFor(timeZone, this.param), false, this.param);
  }

  contains(date: Date): boolean {
    const { weekday, minute } = this.clock(date);
    const yesterday = (weekday + 6) % 7;
    for (const s of this.spans) {
      if (s.start < s.end) {
        if (s.days & (1 << weekday) && minute >= s.start && minute < s.end) return true;
      } else {
        // Across midnight: the evening part on a named day, the morning part on the day after.
        if (s.days & (1 << weekday) && minute >= s.start) return true;
        if (s.days & (1 << yesterday) && minute < s.end) return true;
      }
    }
    return false;
  }

  toString(): string {
    return this.source;
  }
}
