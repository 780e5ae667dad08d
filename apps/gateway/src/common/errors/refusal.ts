import { ErrorCode } from './error-code';

// The code of the problem a response carries, kept beside the response (not on it) for the
// request log and the metrics, which see the response only when it has finished.
const codes = new WeakMap<object, ErrorCode>();

export function markProblem(res: object, code: ErrorCode): void {
  codes.set(res, code);
}

/** The problem code the response was answered with, if it was a problem. */
export function problemCodeOf(res: object): ErrorCode | undefined {
  return codes.get(res);
}

/**
 * An expected refusal: the gateway answered as designed (a bad request, a limit, a full dam, an
 * overloaded AI, a Redis it cannot use). It is counted, never logged one line each, and carries
 * no stack. Only `internal` (an unhandled error) is a fault.
 */
export function isExpectedRefusal(code: ErrorCode | undefined): code is ErrorCode {
  return code !== undefined && code !== ErrorCode.Internal;
}
