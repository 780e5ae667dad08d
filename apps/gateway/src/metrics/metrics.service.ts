import { Inject, Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Reply } from '@traffic-dam/ai-bridge';
import { INSTANCE_ID } from '../common/instance';
import { TalliedCounter, TalliedHistogram } from './tally';
import { registerSnapshotGauges, type AiSnapshot, type DamSnapshot } from './snapshot-gauges';

export type { AiSnapshot, DamSnapshot } from './snapshot-gauges';

type ReplyType = Reply['type'];
const REPLY_TYPES: readonly ReplyType[] = ['token', 'done', 'error'];

/** Every metric of the gateway, on one registry labelled with the instance id. */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();

  readonly httpRequests: TalliedCounter<'method' | 'route' | 'status'>;
  readonly httpDuration: TalliedHistogram<'method' | 'route' | 'status'>;
  readonly httpRefusals: TalliedCounter<'route' | 'code'>;
  readonly sseOpened: Counter;
  readonly sseClosed: Counter<'reason'>;
  readonly questions: TalliedCounter<'outcome' | 'via'>;
  readonly replies: Counter<'type'>;
  /** Replies relayed since the last scrape, by type: a token costs an addition, not a label lookup. */
  private readonly relayed: Record<ReplyType, number> = { token: 0, done: 0, error: 0 };
  readonly orphanReplies: Counter;
  readonly answersLost: Counter;
  readonly swept: Counter<'action'>;
  readonly dlqEntries: Gauge;
  readonly answerTtft: Histogram;
  readonly answerDuration: Histogram<'outcome'>;
  readonly damAdmitted: Counter<'fallback'>;
  readonly damRefused: TalliedCounter<'reason'>;
  readonly damShadowRefused: Counter<'reason'>;
  readonly damAdmitDuration: TalliedHistogram<'outcome'>;
  readonly damEvents: Counter<'type'>;
  readonly damQueued: Counter;
  readonly damWaited: Histogram<'outcome'>;
  readonly questionsQueued: Counter;
  readonly redisErrors: Counter<'kind' | 'op'>;
  private damSnapshot: (() => DamSnapshot) | null = null;
  readonly aiRefused: TalliedCounter<'reason'>;
  readonly aiTokens: Counter<'model' | 'kind'>;
  readonly breakerTransitions: Counter<'to' | 'reason'>;
  readonly breakerProbes: Counter<'ok'>;
  private breakerState: (() => number) | null = null;
  private aiSnapshot: (() => AiSnapshot) | null = null;
  private sseOpenCount: (() => number) | null = null;

  constructor(@Inject(INSTANCE_ID) instanceId: string) {
    this.registry.setDefaultLabels({ instance_id: instanceId });
    collectDefaultMetrics({ register: this.registry, prefix: 'td_' });
    const registers = [this.registry];
    this.httpRequests = new TalliedCounter({
      name: 'td_http_requests_total',
      help: 'HTTP requests by method, route and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.httpDuration = new TalliedHistogram({
      name: 'td_http_request_duration_seconds',
      help: 'HTTP request duration until the response finished (SSE: until the stream closed)',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    const sseOpen = () => this.sseOpenCount?.() ?? 0;
    new Gauge({
      name: 'td_sse_sessions_open',
      help: 'SSE sessions open on this instance',
      registers,
      collect() {
        this.set(sseOpen());
      },
    });
    this.httpRefusals = new TalliedCounter({
      name: 'td_http_refusals_total',
      help: 'Requests answered with a problem (a refusal), by route and code: counted here, not logged one line each',
      labelNames: ['route', 'code'],
      registers,
    });
    this.sseOpened = new Counter({ name: 'td_sse_sessions_opened_total', help: 'SSE sessions opened', registers });
    this.sseClosed = new Counter({
      name: 'td_sse_sessions_closed_total',
      help: 'SSE sessions closed, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.questions = new TalliedCounter({
      name: 'td_questions_total',
      help: 'Questions asked on this instance, by outcome and by the transport that asked (via: http or socketio)',
      labelNames: ['outcome', 'via'],
      registers,
    });
    const relayed = this.relayed;
    this.replies = new Counter({
      name: 'td_replies_total',
      help: 'Worker replies relayed to a local stream, by type',
      labelNames: ['type'],
      registers,
      // Tallied in plain numbers (countReply) and added when scraped.
      collect() {
        for (const type of REPLY_TYPES) {
          if (relayed[type] > 0) this.inc({ type }, relayed[type]);
          relayed[type] = 0;
        }
      },
    });
    this.orphanReplies = new Counter({
      name: 'td_replies_orphaned_total',
      help: 'Worker replies for a session that is no longer open here (the question gets cancelled)',
      registers,
    });
    this.answersLost = new Counter({
      name: 'td_answers_lost_total',
      help: 'Questions with no done or error by their deadline; the client got error deadline_exceeded',
      registers,
    });
    this.swept = new Counter({
      name: 'td_sweeper_questions_total',
      help: "Questions this instance swept: a dead worker's requeued for a live worker or dead_lettered; breaker_shed: still queued when the breaker opened, dead-lettered",
      labelNames: ['action'],
      registers,
    });
    this.dlqEntries = new Gauge({
      name: 'td_dlq_entries',
      help: 'Entries in the dead-letter stream, as last read (every AI_SWEEP_MS, not per scrape)',
      registers,
    });
    // Observed by the instance holding the stream, from acceptance of the question.
    const answerBuckets = [0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60];
    this.answerTtft = new Histogram({
      name: 'td_answer_ttft_seconds',
      help: 'Time from a question accepted to its first token relayed to the client',
      buckets: answerBuckets,
      registers,
    });
    this.answerDuration = new Histogram({
      name: 'td_answer_duration_seconds',
      help: 'Time from a question accepted to its done or error relayed to the client, by outcome',
      labelNames: ['outcome'],
      buckets: answerBuckets,
      registers,
    });
    this.damAdmitted = new Counter({
      name: 'td_dam_admitted_total',
      help: 'Streams admitted by the dam, by whether the local fallback decided',
      labelNames: ['fallback'],
      registers,
    });
    this.damRefused = new TalliedCounter({
      name: 'td_dam_refused_total',
      help: 'Requests refused by the dam, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.damShadowRefused = new Counter({
      name: 'td_dam_shadow_refused_total',
      help: 'Requests the dam would have refused in enforce mode (shadow mode lets them in)',
      labelNames: ['reason'],
      registers,
    });
    this.damAdmitDuration = new TalliedHistogram({
      name: 'td_dam_admit_duration_seconds',
      help: 'Time to decide one stream admission, Redis round trip included',
      labelNames: ['outcome'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25],
      registers,
    });
    this.damEvents = new Counter({
      name: 'td_dam_events_total',
      help: 'Dam state changes: registered, fenced, fallback_entered, fallback_left, heartbeat_failed',
      labelNames: ['type'],
      registers,
    });
    this.damQueued = new Counter({
      name: 'td_dam_queued_total',
      help: 'Streams that offered to wait and joined the waiting line (the budget was full)',
      registers,
    });
    this.damWaited = new Histogram({
      name: 'td_dam_wait_seconds',
      help: 'Time a stream waited in the line, by how the wait ended: admitted, timeout, shed, left, stopped, lost',
      labelNames: ['outcome'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120],
      registers,
    });
    this.questionsQueued = new Counter({
      name: 'td_questions_queued_total',
      help: 'Accepted questions that waited behind others and were told their place (queued events)',
      registers,
    });
    this.redisErrors = new Counter({
      name: 'td_redis_errors_total',
      help: 'Redis calls on a request path that failed, by kind (timeout, oom: at its memory limit, unreachable, error) and operation',
      labelNames: ['kind', 'op'],
      registers,
    });
    this.aiRefused = new TalliedCounter({
      name: 'td_ai_refused_total',
      help: 'Questions refused by the AI gate: overloaded (estimated wait over the limit), overloaded_known (the same, proven by the last refusal without asking Redis), no_worker',
      labelNames: ['reason'],
      registers,
    });
    this.aiTokens = new Counter({
      name: 'td_ai_tokens_total',
      help: 'Tokens of the answers this instance relayed to the end (done), by model and kind (prompt, completion), as the worker reported them',
      labelNames: ['model', 'kind'],
      registers,
    });
    this.breakerTransitions = new Counter({
      name: 'td_breaker_transitions_total',
      help: 'Circuit breaker transitions seen by this instance, by new state and reason',
      labelNames: ['to', 'reason'],
      registers,
    });
    this.breakerProbes = new Counter({
      name: 'td_breaker_probes_total',
      help: 'Half-open probes this instance sent (it held the probe lock), by result',
      labelNames: ['ok'],
      registers,
    });
    registerSnapshotGauges(registers, {
      dam: () => this.damSnapshot?.() ?? null,
      ai: () => this.aiSnapshot?.() ?? null,
      breaker: () => this.breakerState?.() ?? 0,
    });
  }

  /** A worker reply relayed to a local stream (td_replies_total). */
  countReply(type: ReplyType): void {
    this.relayed[type]++;
  }

  registerSseOpen(read: () => number): void {
    this.sseOpenCount = read;
  }

  registerBreakerCollector(read: () => number): void {
    this.breakerState = read;
  }

  registerAiCollector(read: () => AiSnapshot): void {
    this.aiSnapshot = read;
  }

  registerDamCollector(read: () => DamSnapshot): void {
    this.damSnapshot = read;
  }
}
