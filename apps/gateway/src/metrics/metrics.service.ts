import { Inject, Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { INSTANCE_ID } from '../common/instance';

/** Every metric of the gateway, on one registry labelled with the instance id. */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();

  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
  readonly sseOpen: Gauge;
  readonly sseOpened: Counter;
  readonly sseClosed: Counter<'reason'>;
  readonly questions: Counter<'outcome'>;
  readonly replies: Counter<'type'>;
  readonly orphanReplies: Counter;

  constructor(@Inject(INSTANCE_ID) instanceId: string) {
    this.registry.setDefaultLabels({ instance_id: instanceId });
    collectDefaultMetrics({ register: this.registry, prefix: 'td_' });
    const registers = [this.registry];
    this.httpRequests = new Counter({
      name: 'td_http_requests_total',
      help: 'HTTP requests by method, route and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.httpDuration = new Histogram({
      name: 'td_http_request_duration_seconds',
      help: 'HTTP request duration until the response finished (SSE: until the stream closed)',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.sseOpen = new Gauge({ name: 'td_sse_sessions_open', help: 'SSE sessions open on this instance', registers });
    this.sseOpened = new Counter({ name: 'td_sse_sessions_opened_total', help: 'SSE sessions opened', registers });
    this.sseClosed = new Counter({
      name: 'td_sse_sessions_closed_total',
      help: 'SSE sessions closed, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.questions = new Counter({
      name: 'td_questions_total',
      help: 'Questions posted to this instance, by outcome',
      labelNames: ['outcome'],
      registers,
    });
    this.replies = new Counter({
      name: 'td_replies_total',
      help: 'Worker replies relayed to a local stream, by type',
      labelNames: ['type'],
      registers,
    });
    this.orphanReplies = new Counter({
      name: 'td_replies_orphaned_total',
      help: 'Worker replies for a session that is no longer open here (the question gets cancelled)',
      registers,
    });
  }
}
