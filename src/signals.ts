// Termination signals as an AbortSignal, for commands that stop at a safe point (the jobs stop after
// their current step). Ground floor: imports nothing of the project.
//   first SIGTERM/SIGINT  the controller aborts (its reason names the signal); the command finishes
//                         its current step, journals it and exits 0
//   second one            forced exit (128 + the signal's number), for an operator who cannot wait

/** The part of a logger this needs (log.ts's Logger fits). */
export interface SignalLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface StopOnSignals {
  /** Aborted at the first signal; `reason` is a StopRequested naming it. */
  readonly signal: AbortSignal;
  /** Removes the handlers (call when the command is done, so an in-process caller keeps its own). */
  dispose(): void;
}

/** Why an AbortSignal from stopOnSignals() aborted. */
export class StopRequested extends Error {
  constructor(readonly signalName: string) {
    super(`stopped by ${signalName}`);
    this.name = 'StopRequested';
  }
}

const NUMBERS: Record<string, number> = { SIGINT: 2, SIGTERM: 15 };

export interface StopOptions {
  log?: SignalLog;
  /** What the first signal means to the operator, for the log line (default "stopping after the current step"). */
  what?: string;
  /** Exit on the second signal (default true). */
  forceOnSecond?: boolean;
  /** How to exit on the second signal (default process.exit). */
  exit?: (code: number) => void;
  signals?: NodeJS.Signals[];
}

export function stopOnSignals(o: StopOptions = {}): StopOnSignals {
  const controller = new AbortController();
  const signals = o.signals ?? ['SIGTERM', 'SIGINT'];
  const on = (sig: NodeJS.Signals) => {
    if (!controller.signal.aborted) {
      o.log?.info(`${sig} received; ${o.what ?? 'stopping after the current step'} (send it again to exit at once)`, { signal: sig });
      controller.abort(new StopRequested(sig));
      return;
    }
    if (o.forceOnSecond === false) return;
    const code = 128 + (NUMBERS[sig] ?? 15);
    o.log?.warn(`second ${sig}: exiting now, in the middle of the current step (the next run reconciles it)`, { signal: sig, exitCode: code });
    (o.exit ?? ((c: number) => process.exit(c)))(code);
  };
  for (const s of signals) process.on(s, on);
  return {
    signal: controller.signal,
    dispose: () => {
      for (const s of signals) process.off(s, on);
    },
  };
}

/** The signal's name when `signal` aborted because of one, else null. */
export function stopReason(signal: AbortSignal | undefined): string | null {
  if (!signal?.aborted) return null;
  const r: unknown = signal.reason;
  return r instanceof StopRequested ? r.signalName : r instanceof Error ? r.message : String(r ?? 'aborted');
}

/** Resolves with the signal's name once a termination signal arrived (and its handlers are removed again). */
export function untilSignal(log?: SignalLog, signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): Promise<string> {
  return new Promise((resolveSignal) => {
    const on = (sig: NodeJS.Signals) => {
      for (const s of signals) process.off(s, on);
      log?.info('signal received', { signal: sig });
      resolveSignal(sig);
    };
    for (const s of signals) process.on(s, on);
  });
}
