// What the tiering and archive jobs' Prometheus metrics share: the step-duration histogram.
import { Histogram, type Registry } from 'prom-client';

/** Seconds a step took, by step: one bucket layout for both jobs, from 0.1 s to an hour. */
export function stepSecondsHistogram(registry: Registry, name: string, help: string): Histogram<'step'> {
  return new Histogram({ name, help, labelNames: ['step'], buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600], registers: [registry] });
}
