export { AI_PATTERNS, AiClient, AiOverloadedError, AnswerTimeoutError, EnqueueUnknownError, QuestionRefusedError, UnknownPatternError } from './lib/ai.client';
export type {
  AiClientOptions,
  AnswerWatcher,
  AnswerRequest,
  AskGate,
  AskRequest,
  AskResult,
  CancelEvent,
  EnqueueRequest,
  RequestBound,
  UnclaimedReplyHandler,
} from './lib/ai.client';
export { liveWorkers } from './lib/reply-channel';
export type { ReplyHandler } from './lib/reply-channel';
export { parseReply, parseReplyBatch, parseHeartbeat, protocolKeys, questionToFields } from './lib/protocol';
export type {
  AnswerUsage,
  DoneReply,
  ErrorReply,
  Question,
  Reply,
  ReplyBatch,
  ReplyErrorCode,
  TokenReply,
  WorkerHeartbeat,
} from './lib/protocol';
export { DeadLetterQueue } from './lib/dead-letters';
export type { DeadLetter, DeadLetterOptions, DeadLetterReason, ReplayReport } from './lib/dead-letters';
export { QuestionSweeper } from './lib/sweeper';
export type { SweepReport, SweeperOptions } from './lib/sweeper';
