// Error types shared by every layer. Ground floor: imports only redact.ts.
import { redact } from './redact.ts';

/** An error with a stable code, a message fit for an operator, and a process exit status. */
export class StrataError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, message: string, opts: { cause?: unknown; exitCode?: number } = {}) {
    super(redact(message), opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StrataError';
    this.code = code;
    this.exitCode = opts.exitCode ?? 1;
  }
}

/** Bad configuration: reported before any connection is opened. Exit status 78 (EX_CONFIG). */
export class ConfigError extends StrataError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('config', `invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`, { exitCode: 78 });
    this.name = 'ConfigError';
    this.problems = problems.map(redact);
  }
}

/** Wrong command-line usage. Exit status 64 (EX_USAGE). */
export class UsageError extends StrataError {
  constructor(message: string) {
    super('usage', message, { exitCode: 64 });
    this.name = 'UsageError';
  }
}

/** The text of any thrown value, redacted. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return redact(err.message);
  return redact(String(err));
}

/**
 * SQLSTATE of an error the server reported, if any. node-postgres and PGlite both expose `code` and
 * `severity`; Node's own errors (EPIPE, EPERM) have a code but no severity.
 */
export function sqlState(err: unknown): string | undefined {
  const e = err as { code?: unknown; severity?: unknown } | null;
  return typeof e?.severity === 'string' && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) ? e.code : undefined;
}
