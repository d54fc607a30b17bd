// The --testcontainers target: timescale/timescaledb-ha started through a Docker engine, or a clear
// message (exit 69) when no engine is reachable.
export async function timescaleContainer(log: (line: string) => void): Promise<{ url: string; stop(): Promise<void> }> {
  const { GenericContainer, Wait, getContainerRuntimeClient } = await import('testcontainers');
  try {
    await getContainerRuntimeClient();
  } catch (err) {
    log(`--testcontainers needs a Docker engine, and none is reachable (${(err as Error).message.split('\n')[0]}). Use --url with a TimescaleDB server, or --embedded for a small run.`);
    process.exit(69);
  }
  const image = process.env.STRATA_BENCH_IMAGE ?? 'timescale/timescaledb-ha:pg15';
  log(`starting ${image} …`);
  const container = await new GenericContainer(image)
    .withEnvironment({ POSTGRES_PASSWORD: 'bench' })
    .withExposedPorts(5432)
    .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
    .start();
  return {
    url: `postgres://postgres:bench@${container.getHost()}:${container.getMappedPort(5432)}/postgres`,
    stop: async () => void (await container.stop()),
  };
}
