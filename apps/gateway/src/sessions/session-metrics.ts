import { Injectable } from '@nestjs/common';
import { Counter, Gauge } from 'prom-client';
import { MetricsService } from '../metrics/metrics.service';
import { SessionRegistry } from './session-registry';
import { TRANSPORTS, type CloseReason, type Transport } from './session-events';

/** The session metrics, labelled by transport; SSE's also under their first names (td_sse_*). */
@Injectable()
export class SessionMetrics {
  private readonly opened: Counter<'transport'>;
  private readonly closed: Counter<'transport' | 'reason'>;
  readonly cleanupFailures: Counter;

  constructor(
    private readonly metrics: MetricsService,
    registry: SessionRegistry,
  ) {
    const registers = [metrics.registry];
    new Gauge({
      name: 'td_sessions_open',
      help: 'Sessions open on this instance, by transport',
      labelNames: ['transport'],
      registers,
      collect() {
        for (const t of TRANSPORTS) this.set({ transport: t }, registry.sizeOf(t));
      },
    });
    this.opened = new Counter({ name: 'td_sessions_opened_total', help: 'Sessions opened, by transport', labelNames: ['transport'], registers });
    this.closed = new Counter({
      name: 'td_sessions_closed_total',
      help: 'Sessions closed, by transport and reason',
      labelNames: ['transport', 'reason'],
      registers,
    });
    this.cleanupFailures = new Counter({
      name: 'td_session_cleanup_retries_total',
      help: 'Rounds of session clean-up (record, in-flight claim, cancel) that Redis did not confirm and that are tried again',
      registers,
    });
    // SSE's gauge reads the registry too.
    metrics.registerSseOpen(() => registry.sizeOf('sse'));
  }

  sessionOpened(transport: Transport): void {
    this.opened.inc({ transport });
    if (transport === 'sse') this.metrics.sseOpened.inc();
  }

  sessionClosed(transport: Transport, reason: CloseReason): void {
    this.closed.inc({ transport, reason });
    if (transport === 'sse') this.metrics.sseClosed.inc({ reason });
  }
}
