export { ErrorCode, ERROR_STATUS } from './error-code';
export { GatewayException } from './gateway.exception';
export type { GatewayExceptionOptions, RateLimitInfo } from './gateway.exception';
export { problemBody, rateLimitHeaders, toProblem } from './problem';
export type { Problem, ProblemResponse } from './problem';
export { ProblemFilter } from './problem.filter';
export { sendProblem } from './send-problem';
export { toSocketProblem } from './socket-problem';
export type { SocketProblem } from './socket-problem';
