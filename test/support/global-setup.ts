// Starts one native PostgreSQL 15 + PgBouncer for the whole run; test files create their own databases.
import 'vitest';
import type { TestProject } from 'vitest/node';
import { Cluster, type ClusterInfo } from './cluster.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    cluster: ClusterInfo;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cluster = await Cluster.create();
  project.provide('cluster', { dir: cluster.dir, pgPort: cluster.pgPort, bouncerPort: cluster.bouncerPort });
  return () => cluster.destroy();
}
