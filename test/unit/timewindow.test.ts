import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../src/config/types.js';
import { parseTimeWindow } from '../../src/policy/timewindow.js';

// 2024-01-01 was a Monday. Evaluated in UTC so the test does not depend on the machine's zone.
const at = (day: number, hhmm: string): Date =>
  new Date(Date.UTC(2024, 0, day, Number(hhmm.slice(0, 2)), Number(hhmm.slice(2))));
const MON = 1, TUE = 2, WED = 3, FRI = 5, SAT = 6, SUN = 7;

test('weekday ranges with times', () => {
  const w = parseTimeWindow('mon-fri/0900-1800,sat/1000-1300', 'WHEN', 'UTC');
  assert.ok(w.contains(at(MON, '0900')));
  assert.ok(w.contains(at(FRI, '1759')));
  assert.ok(!w.contains(at(FRI, '1800')), 'the end is exclusive');
  assert.ok(!w.contains(at(MON, '0859')));
  assert.ok(w.contains(at(SAT, '1200')));
  assert.ok(!w.contains(at(SAT, '1400')));
  assert.ok(!w.contains(at(SUN, '1200')));
  assert.equal(w.source, 'mon-fri/0900-1800,sat/1000-1300');
});

test('times alone mean every day; days alone mean whole days; mon,wed/...', () => {
  const every = parseTimeWindow('0900-1000', 'WHEN', 'UTC');
  for (let d = MON; d <= SUN; d++) assert.ok(every.contains(at(d, '0930')));
  assert.ok(!every.contains(at(TUE, '1000')));
  const weekend = parseTimeWindow('sat,sun', 'WHEN', 'UTC');
  assert.ok(weekend.contains(at(SAT, '0000')) && weekend.contains(at(SUN, '2359')));
  assert.ok(!weekend.contains(at(FRI, '2359')));
  const mw = parseTimeWindow('mon,wed/0800-0900', 'WHEN', 'UTC');
  assert.ok(mw.contains(at(MON, '0830')) && mw.contains(at(WED, '0830')));
  assert.ok(!mw.contains(at(TUE, '0830')));
  const wrap = parseTimeWindow('fri-mon/1200-1300', 'WHEN', 'UTC');
  assert.ok(wrap.contains(at(SUN, '1230')) && wrap.contains(at(MON, '1230')));
  assert.ok(!wrap.contains(at(TUE, '1230')));
  assert.ok(parseTimeWindow('monday/0000-2400', 'WHEN', 'UTC').contains(at(MON, '2359')));
});

test('ranges across midnight belong to the day they start', () => {
  const night = parseTimeWindow('fri/2200-0600', 'WHEN', 'UTC');
  assert.ok(night.contains(at(FRI, '2300')));
  assert.ok(night.contains(at(SAT, '0559')));
  assert.ok(!night.contains(at(SAT, '0600')));
  assert.ok(!night.contains(at(FRI, '0500')), 'Friday morning belongs to Thursday night');
  assert.ok(!night.contains(at(SAT, '2300')));
});

test('named IANA time zones', () => {
  // 08:30 UTC on a Monday is 09:30 in Paris (UTC+1 in January) and 03:30 in New York.
  const d = at(MON, '0830');
  assert.ok(parseTimeWindow('mon/0900-1000', 'WHEN', 'Europe/Paris').contains(d));
  assert.ok(!parseTimeWindow('mon/0900-1000', 'WHEN', 'America/New_York').contains(d));
  // Late Sunday UTC is already Monday in Tokyo.
  assert.ok(parseTimeWindow('mon/0000-0200', 'WHEN', 'Asia/Tokyo').contains(at(SUN, '1600')));
  assert.throws(() => parseTimeWindow('mon', 'WHEN', 'Mars/Olympus'), (e: unknown) => e instanceof ConfigError && /time zone/.test(e.message));
});

test('the machine time zone by default', () => {
  const w = parseTimeWindow('0000-2400', 'WHEN');
  assert.ok(w.contains(new Date()));
  const d = new Date(2024, 0, 3, 10, 15); // local Wednesday 10:15
  assert.ok(parseTimeWindow('wed/1000-1030', 'WHEN').contains(d));
  assert.ok(!parseTimeWindow('thu/1000-1030', 'WHEN').contains(d));
});

test('bad windows throw ConfigError naming the parameter', () => {
  for (const bad of ['', ',', 'mo', 'funday', 'mon/', 'mon/9-17', 'mon/0900-2500', 'mon/0960-1000', '0900-0900', 'mon,0900-1000', 'mon-/0900-1000', '2400-0100', 'mon/0900']) {
    assert.throws(() => parseTimeWindow(bad, 'PERMIT'), (e: unknown) => e instanceof ConfigError && e.param === 'PERMIT', JSON.stringify(bad));
  }
});

test('fuzz: random text parses or throws ConfigError', () => {
  let seed = 42;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const parts = ['mon', 'fri', 'sat', '-', '/', ',', '0900', '1800', '2400', '*', 'x', '0', '+'];
  for (let i = 0; i < 3000; i++) {
    let s = '';
    for (let j = rand(8); j > 0; j--) s += parts[rand(parts.length)];
    try {
      assert.equal(typeof parseTimeWindow(s, 'FUZZ', 'UTC').contains(new Date(i * 3_600_000)), 'boolean');
    } catch (e) {
      assert.ok(e instanceof ConfigError, `${JSON.stringify(s)} threw ${String(e)}`);
    }
  }
});
