/**
 * REDIS=redis://[USER:PASS@]HOST:PORT[/DB]: parsed into host, port, database and credentials;
 * a bad value is refused with a message that never repeats the password; logs name the server
 * with the password as ***.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { parseRedis, redisLabel } from '../../src/config/params.js';
import { ConfigError } from '../../src/config/types.js';

describe('REDIS=', () => {
  test('host, port, database and credentials', () => {
    assert.deepEqual(parseRedis('redis://10.0.0.5:6380/2', 'REDIS'), { host: '10.0.0.5', port: 6380, db: 2 });
    assert.deepEqual(parseRedis('redis://redis.lan', 'REDIS'), { host: 'redis.lan', port: 6379, db: 0 });
    assert.deepEqual(parseRedis('redis://[::1]:7000', 'REDIS'), { host: '::1', port: 7000, db: 0 });
    assert.deepEqual(parseRedis('redis://fleet:p%40ss@127.0.0.1:6379/1', 'REDIS'), { host: '127.0.0.1', port: 6379, db: 1, user: 'fleet', password: 'p@ss' });
    assert.deepEqual(parseRedis('redis://:secret@127.0.0.1:6379', 'REDIS'), { host: '127.0.0.1', port: 6379, db: 0, password: 'secret' });
  });

  test('a bad value is refused without its password', () => {
    for (const bad of ['http://h:1', 'redis://u:topsecret@h:99999', 'redis://u:topsecret@h:1/x', 'redis://']) {
      assert.throws(
        () => parseRedis(bad, 'REDIS'),
        (e: unknown) => e instanceof ConfigError && !/topsecret/.test(e.message),
        bad,
      );
    }
  });

  test('the label hides the password', () => {
    assert.equal(redisLabel({ host: '::1', port: 6379, db: 3, user: 'u', password: 'pw' }), 'redis://u:***@[::1]:6379/3');
    assert.equal(redisLabel({ host: 'h', port: 1, db: 0 }), 'redis://h:1');
  });

  test('WORKERS no longer refuses BANDWIDTH, MAXIMA or QUOTA', () => {
    const c = loadConfig(['-P127.0.0.1:1080/socks', 'WORKERS=2', 'BANDWIDTH=1m:all', 'MAXIMA=peruser:2', 'QUOTA=1g/day:all', 'REDIS=redis://127.0.0.1:6379']);
    assert.equal(c.workers, 2);
    assert.equal(c.redis?.port, 6379);
  });
});
