// Object keys: <prefix>/<region>/<schema>.<hypertable>/<yyyy>/<mm>/<range_start>_<range_end>.tar.gz,
// times in UTC as 20240501T000000Z (no ':' so the key needs no escaping anywhere).

const stamp = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');

export function objectKey(prefix: string, region: string, hypertable: string, rangeStart: Date, rangeEnd: Date): string {
  const yyyy = String(rangeStart.getUTCFullYear()).padStart(4, '0');
  const mm = String(rangeStart.getUTCMonth() + 1).padStart(2, '0');
  const parts = [prefix.replace(/^\/+|\/+$/g, ''), region, hypertable, yyyy, mm, `${stamp(rangeStart)}_${stamp(rangeEnd)}.tar.gz`];
  return parts.filter((p) => p !== '').join('/');
}

/** The prefix every object of a region lives under (what lifecycle rules apply to). */
export const regionPrefix = (prefix: string, region: string): string => [prefix.replace(/^\/+|\/+$/g, ''), region].filter((p) => p !== '').join('/') + '/';
