export { ErrorCode, ERROR_STATUS } from './error-code';
export { GatewayException } from './gateway.exception';
export type { GatewayExceptionOptions } from './gateway.exception';
export { toProblem } from './problem';
export type { Problem, ProblemResponse } from './problem';
export { ProblemFilter } from './problem.filter';
export { sendProblem } from './send-problem';
export { isExpectedRefusal, problemCodeOf } from './refusal';
