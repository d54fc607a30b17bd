// The accepted time window: how far in the past and the future a row's timestamp may be, measured
// from when its request arrived. A line outside is refused (400, that line only) with the reason;
// the defaults (10 years back, 1 day ahead) keep real backfills working while one stray timestamp
// (a clock at 1970, a unit mix-up landing in 2262) can no longer create a chunk far from the rest.
export interface TimeWindow {
  /** Oldest accepted age, ms before the request arrived. */
  pastMs: number;
  /** Furthest accepted lead, ms after the request arrived. */
  futureMs: number;
  /** How the settings read, for messages: "10 years", "1 day". */
  pastText: string;
  futureText: string;
}

export const DAY_MS = 86_400_000;

/** Unbounded: every timestamp the line protocol can hold (years 1677–2262) is inside. */
export const OPEN_WINDOW: TimeWindow = { pastMs: Infinity, futureMs: Infinity, pastText: 'any age', futureText: 'any lead' };

/** The window around a request received at `receiveUs` (µs since 1970), in µs. */
export interface Bounds {
  minUs: number;
  maxUs: number;
}

export function bounds(w: TimeWindow, receiveUs: number): Bounds {
  return { minUs: receiveUs - w.pastMs * 1000, maxUs: receiveUs + w.futureMs * 1000 };
}

const iso = (us: number) => new Date(Math.floor(us / 1000)).toISOString();

/** Why a row at `timeUs` is refused, or null when it is inside. */
export function outside(w: TimeWindow, b: Bounds, timeUs: number): string | null {
  if (timeUs < b.minUs) return `timestamp ${iso(timeUs)} is more than ${w.pastText} in the past (accepted: ${iso(b.minUs)} to ${iso(b.maxUs)}; STRATA_TIME_MAX_PAST)`;
  if (timeUs > b.maxUs) return `timestamp ${iso(timeUs)} is more than ${w.futureText} in the future (accepted: ${iso(b.minUs)} to ${iso(b.maxUs)}; STRATA_TIME_MAX_FUTURE)`;
  return null;
}
