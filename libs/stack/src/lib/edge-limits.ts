/**
 * The dam's outer layer (DESIGN.md, layer 1): per-client-IP limits in nginx, answered by nginx
 * itself with a 429 problem body, before any gateway sees the request. Off by default: many users
 * share a NAT address, and every test client here is 127.0.0.1.
 */
export interface EdgeLimits {
  /** Streams open at once from one client IP (nginx limit_conn); 0 = off. Default 0. */
  streamsPerIp?: number;
  /** Questions per second from one client IP, at most as many at one instant (nginx limit_req); 0 = off. Default 0. */
  questionsPerIpPerSec?: number;
}

/** The stable codes of the edge's refusals, as the gateway's own problem bodies carry theirs. */
export const EDGE_CODES = { streams: 'ip_stream_limit', questions: 'ip_rate_limited' } as const;

/** A named location that answers the limit's 429 itself, as a problem body with its code. */
function refusalLocation(name: string, code: string, title: string, detail: string): string {
  // nginx's return takes a quoted string: the JSON must not contain a single quote.
  const body = JSON.stringify({ type: `https://traffic-dam.dev/problems/${code}`, title, status: 429, detail, code });
  return [
    `    location @${name} {`,
    '      default_type application/problem+json;',
    '      add_header Retry-After 1 always;',
    `      return 429 '${body}';`,
    '    }',
  ].join('\n');
}

function wholeNumber(name: string, v: number | undefined): number {
  const n = v ?? 0;
  if (!Number.isInteger(n) || n < 0) throw new Error(`edge limits: ${name} must be a whole number >= 0, got ${String(v)}`);
  return n;
}

/** The template's EDGE_* placeholders: empty strings when a limit is off. */
export function renderEdgeLimits(limits: EdgeLimits = {}): Record<'EDGE_ZONES' | 'EDGE_STREAM_LIMIT' | 'EDGE_QUESTION_LIMIT' | 'EDGE_REFUSALS', string> {
  const streams = wholeNumber('streamsPerIp', limits.streamsPerIp);
  const questions = wholeNumber('questionsPerIpPerSec', limits.questionsPerIpPerSec);
  const zones: string[] = [];
  const refusals: string[] = [];
  let streamLimit = '';
  let questionLimit = '';
  if (streams > 0) {
    zones.push('  limit_conn_zone $binary_remote_addr zone=td_ip_streams:10m;');
    streamLimit = [
      `      limit_conn td_ip_streams ${streams};`,
      '      limit_conn_status 429;',
      '      limit_conn_log_level warn;',
      '      error_page 429 = @td_ip_stream_limit;',
    ].join('\n');
    refusals.push(
      refusalLocation('td_ip_stream_limit', EDGE_CODES.streams, 'Too many open streams from this address', `At most ${streams} open streams per client address; close one first.`),
    );
  }
  if (questions > 0) {
    // Only questions (POST .../messages) carry the key: nginx does not count a request whose key
    // is empty, so the limit can sit in the catch-all location that proxies them.
    zones.push(
      [
        '  map "$request_method $uri" $td_question_ip {',
        '    "~^POST /chat/sessions/[^/]+/messages$" $binary_remote_addr;',
        '    default "";',
        '  }',
      ].join('\n'),
      `  limit_req_zone $td_question_ip zone=td_ip_questions:10m rate=${questions}r/s;`,
    );
    questionLimit = [
      // nginx passes 1 + burst at one instant.
      `      limit_req zone=td_ip_questions burst=${questions - 1} nodelay;`,
      '      limit_req_status 429;',
      '      limit_req_log_level warn;',
      '      error_page 429 = @td_ip_rate_limited;',
    ].join('\n');
    refusals.push(
      refusalLocation('td_ip_rate_limited', EDGE_CODES.questions, 'Too many questions from this address', `At most ${questions} questions per second per client address.`),
    );
  }
  return { EDGE_ZONES: zones.join('\n'), EDGE_STREAM_LIMIT: streamLimit, EDGE_QUESTION_LIMIT: questionLimit, EDGE_REFUSALS: refusals.join('\n') };
}
