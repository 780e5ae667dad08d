import { EDGE_CODES, renderEdgeLimits } from './edge-limits';

/** The JSON inside `return 429 '...'` of a named refusal location. */
function bodies(refusals: string): unknown[] {
  return [...refusals.matchAll(/return 429 '([^']*)';/g)].map((m) => JSON.parse(m[1] ?? 'null'));
}

describe('edge limits (nginx, per client IP)', () => {
  it('are off by default: every placeholder renders empty', () => {
    expect(renderEdgeLimits()).toEqual({ EDGE_ZONES: '', EDGE_STREAM_LIMIT: '', EDGE_QUESTION_LIMIT: '', EDGE_REFUSALS: '' });
    expect(renderEdgeLimits({ streamsPerIp: 0, questionsPerIpPerSec: 0 }).EDGE_ZONES).toBe('');
  });

  it('limit open streams per address with limit_conn, refused as a 429 problem with its code', () => {
    const r = renderEdgeLimits({ streamsPerIp: 3 });
    expect(r.EDGE_ZONES).toContain('limit_conn_zone $binary_remote_addr zone=td_ip_streams');
    expect(r.EDGE_STREAM_LIMIT).toContain('limit_conn td_ip_streams 3;');
    expect(r.EDGE_STREAM_LIMIT).toContain('limit_conn_status 429;');
    expect(r.EDGE_QUESTION_LIMIT).toBe('');
    expect(r.EDGE_REFUSALS).toContain('add_header Retry-After 1 always;');
    expect(bodies(r.EDGE_REFUSALS)).toEqual([expect.objectContaining({ status: 429, code: EDGE_CODES.streams })]);
  });

  it('limit questions per address and second with limit_req (as many at one instant), question POSTs only', () => {
    const r = renderEdgeLimits({ questionsPerIpPerSec: 5 });
    expect(r.EDGE_ZONES).toContain('limit_req_zone $td_question_ip zone=td_ip_questions:10m rate=5r/s;');
    // Only question POSTs carry the key; a request with an empty key is not counted.
    expect(r.EDGE_ZONES).toMatch(/map "\$request_method \$uri" \$td_question_ip \{[^}]*"~\^POST \/chat\/sessions\/\[\^\/\]\+\/messages\$" \$binary_remote_addr;[^}]*default "";/);
    expect(r.EDGE_QUESTION_LIMIT).toContain('limit_req zone=td_ip_questions burst=4 nodelay;');
    expect(bodies(r.EDGE_REFUSALS)).toEqual([expect.objectContaining({ status: 429, code: EDGE_CODES.questions })]);
  });

  it('refuse settings that are not whole numbers >= 0', () => {
    expect(() => renderEdgeLimits({ streamsPerIp: -1 })).toThrow(/streamsPerIp/);
    expect(() => renderEdgeLimits({ questionsPerIpPerSec: 2.5 })).toThrow(/questionsPerIpPerSec/);
  });
});
