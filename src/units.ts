// Byte counts and durations as people read and type them. Ground floor: imports nothing.

/** 1536 → "1.5 KiB". */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

/** "512GiB", "64 GB", "1TiB" or a byte count; null when unreadable. */
export function parseBytes(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$/i.exec(text);
  if (!m) return null;
  const unit = (m[2] ?? 'b').toLowerCase();
  const pow = { b: 0, kb: 1, kib: 1, mb: 2, mib: 2, gb: 3, gib: 3, tb: 4, tib: 4 }[unit]!;
  const base = unit.includes('i') || unit === 'b' ? 1024 : 1000;
  return Math.round(Number(m[1]) * base ** pow);
}

/** "90s", "30m", "2h", "1h30m" or a number of seconds → milliseconds; null when unreadable. */
export function parseDuration(text: string): number | null {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(t);
  if (!m || t === '') return null;
  return ((Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0)) * 60 + Number(m[3] ?? 0)) * 1000;
}

/** Ms per unit of a span; months and years as their mean lengths (30.436875 and 365.2425 days). */
const SPAN_MS: Record<string, number> = {
  second: 1_000,
  minute: 60_000,
  hour: 3_600_000,
  day: 86_400_000,
  week: 604_800_000,
  month: 2_629_746_000,
  year: 31_556_952_000,
};

/** "10 years", "1 day", "36 hours" (whole units, seconds to years) → milliseconds; null when unreadable. */
export function parseSpan(text: string): number | null {
  const m = /^\s*(\d+)\s*(second|minute|hour|day|week|month|year)s?\s*$/i.exec(text);
  return m ? Number(m[1]) * SPAN_MS[m[2]!.toLowerCase()]! : null;
}
