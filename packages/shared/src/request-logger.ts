import type { FastifyBaseLogger } from 'fastify';

type Bindings = Record<string, unknown>;
type ChildOptions = Parameters<FastifyBaseLogger['child']>[1];
type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/** pino's check; the null logger of `logger: false` has none, and logs nothing anyway. */
const isEnabled = (logger: FastifyBaseLogger, level: string): boolean =>
  (logger as { isLevelEnabled?: (level: string) => boolean }).isLevelEnabled?.(level) ?? true;

/**
 * A request's logger that becomes a child of the service's logger, with the request's
 * bindings, at its first line of an enabled level. Most requests write none: heartbeats,
 * health checks, dispatches and reports log nothing at info. Making every request's child
 * (pino serializes its bindings at once) took 7 % of a server's CPU per heartbeat
 * (bench/RESULTS.md). Its lines are the child's own, so they are the same as before.
 */
export class LazyChildLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | undefined;

  private constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: () => Bindings,
  ) {}

  /** The request's logger: lazy unless its route sets a level or serializers of its own. */
  static of(parent: FastifyBaseLogger, bindings: () => Bindings, options: ChildOptions): FastifyBaseLogger {
    const ownSettings = options !== undefined && Object.keys(options).length > 0;
    return ownSettings ? parent.child(bindings(), options) : new LazyChildLogger(parent, bindings);
  }

  private get logger(): FastifyBaseLogger {
    return (this.made ??= this.parent.child(this.bindings()));
  }

  private write(level: Level, args: unknown[]): void {
    if (!this.made && !isEnabled(this.parent, level)) return;
    (this.logger[level] as (...line: unknown[]) => void)(...args);
  }

  get level(): string {
    return (this.made ?? this.parent).level;
  }

  set level(level: string) {
    this.logger.level = level;
  }

  isLevelEnabled(level: string): boolean {
    return isEnabled(this.made ?? this.parent, level);
  }

  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }

  error(...args: unknown[]): void {
    this.write('error', args);
  }

  warn(...args: unknown[]): void {
    this.write('warn', args);
  }

  info(...args: unknown[]): void {
    this.write('info', args);
  }

  debug(...args: unknown[]): void {
    this.write('debug', args);
  }

  trace(...args: unknown[]): void {
    this.write('trace', args);
  }

  silent(): void {}

  child(bindings: Bindings, options?: ChildOptions): FastifyBaseLogger {
    return this.logger.child(bindings, options);
  }
}
