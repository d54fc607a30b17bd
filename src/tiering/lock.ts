// The hypertable's chunk-job lock, shared by the tiering and archive jobs: see src/jobs/lock.ts.
export { tryLock, unlock } from '../jobs/lock.ts';
