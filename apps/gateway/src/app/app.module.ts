import { Module, type DynamicModule } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { LoggerModule } from 'nestjs-pino';
import { AiModule } from '../ai/ai.module';
import { AnswersModule } from '../answers/answers.module';
import { GATEWAY_CONFIG, type GatewayConfig } from '../common/config/config';
import { DamModePolicy } from '../common/dam-mode.policy';
import { ProblemFilter, isExpectedRefusal, problemCodeOf } from '../common/errors';
import { DamModule } from '../dam/dam.module';
import { INSTANCE_ID } from '../common/instance';
import { LifecycleModule } from '../common/lifecycle.module';
import { RedisModule } from '../common/redis/redis.module';
import { HealthModule } from '../health/health.module';
import { MetricsModule } from '../metrics/metrics.module';
import { QuestionsModule } from '../questions/questions.module';
import { SessionsModule } from '../sessions/sessions.module';
import { SocketIoModule } from '../socketio/socketio.module';
import { SseModule } from '../sse/sse.module';
import { TicketsModule } from '../tickets/tickets.module';
import { redactUrl } from '../common/redact-url';
import { requestIdOf } from '../common/request-id';

@Module({})
export class AppModule {
  static forRoot(config: GatewayConfig, instanceId: string): DynamicModule {
    return {
      module: AppModule,
      global: true,
      imports: [
        LoggerModule.forRoot({
          pinoHttp: {
            level: config.LOG_LEVEL,
            base: { instanceId, pid: process.pid },
            genReqId: (req, res) => {
              const id = requestIdOf(req);
              res.setHeader('X-Request-Id', id);
              return id;
            },
            // A refusal (a problem with a code: 4xx, 429, 503) is the dam working, not an event:
            // it is counted (td_http_refusals_total{code}), never logged one line each; under load
            // those lines would be most of the log. A request that went well is a line at debug
            // (the edge's access log has one per request). Unexpected errors and 5xx are errors.
            customLogLevel: (_req, res, err) => {
              if (err !== undefined) return 'error';
              if (isExpectedRefusal(problemCodeOf(res))) return 'silent';
              return res.statusCode >= 500 ? 'error' : 'debug';
            },
            // Health and metrics polls would drown the events that matter.
            autoLogging: { ignore: (req) => /^\/(health|metrics)/.test(req.url ?? '') },
            redact: ['req.headers.authorization', 'req.headers.cookie'],
            serializers: {
              req: (req: { id: string; method: string; url: string; remoteAddress?: string }) => ({
                id: req.id,
                method: req.method,
                // A stream ticket in the query is a credential.
                url: redactUrl(req.url),
                remoteAddress: req.remoteAddress,
              }),
              // The status is what a request line is read for; the response headers were most of its bytes.
              res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
            },
          },
        }),
        LifecycleModule,
        RedisModule,
        MetricsModule,
        HealthModule,
        DamModule,
        AiModule,
        SessionsModule,
        AnswersModule,
        QuestionsModule,
        TicketsModule,
        SseModule,
        SocketIoModule,
      ],
      providers: [
        { provide: GATEWAY_CONFIG, useValue: config },
        { provide: INSTANCE_ID, useValue: instanceId },
        { provide: APP_FILTER, useClass: ProblemFilter },
        DamModePolicy,
      ],
      exports: [GATEWAY_CONFIG, INSTANCE_ID, DamModePolicy],
    };
  }
}
