/**
 * Which backend of the shared limits (scale/shared-limits.ts) a proxy uses: Redis when REDIS= is
 * set, the primary when this process is a WORKERS=N worker, else this process alone.
 */
import cluster from 'node:cluster';
import type { Config } from '../config/types.js';
import type { Logger } from '../observe/log.js';
import { RedisLimits } from './redis-limits.js';
import { PROCESS_LIMITS, type SharedLimits } from './shared-limits.js';
import { WorkerLimits } from './workers-limits.js';

export function openSharedLimits(config: Config, log: Logger): SharedLimits {
  if (config.redis) return new RedisLimits(config.redis, log);
  if (cluster.isWorker) return new WorkerLimits();
  return PROCESS_LIMITS;
}
