export { AiBridgeClient } from './lib/ai-bridge.client';
export type { AiBridgeOptions, AskGate, AskResult, ReplyHandler } from './lib/ai-bridge.client';
export { parseReply, parseHeartbeat, protocolKeys, questionToFields } from './lib/protocol';
export type {
  AnswerUsage,
  DoneReply,
  ErrorReply,
  Question,
  Reply,
  ReplyErrorCode,
  TokenReply,
  WorkerHeartbeat,
} from './lib/protocol';
export { DeadLetterQueue } from './lib/dead-letters';
export type { DeadLetter, DeadLetterOptions, DeadLetterReason, ReplayReport } from './lib/dead-letters';
export { AI_PATTERNS, AiBridgeTransport, AiOverloadedError, AnswerTimeoutError, UnknownPatternError } from './lib/ai-bridge.transport';
export type {
  AiBridgeTransportOptions,
  AnswerRequest,
  AskRequest,
  CancelEvent,
  EnqueueRequest,
  UnclaimedReplyHandler,
} from './lib/ai-bridge.transport';
export { QuestionSweeper } from './lib/sweeper';
export type { SweepReport, SweeperOptions } from './lib/sweeper';
