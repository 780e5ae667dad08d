import { RedisDeadlineError } from './deadline';
import { redisErrorKind } from './redis-error';

describe('redisErrorKind', () => {
  it('tells a deadline, a full Redis, a lost connection and other errors apart', () => {
    expect(redisErrorKind(new RedisDeadlineError(20))).toBe('timeout');
    expect(redisErrorKind(new Error("OOM command not allowed when used memory > 'maxmemory'."))).toBe('oom');
    expect(redisErrorKind(new Error("OOM command not allowed when used memory > 'maxmemory'. script: 25e4c0ad, on @user_script:1."))).toBe('oom');
    const execAbort = Object.assign(new Error('EXECABORT Transaction discarded because of previous errors.'), {
      previousErrors: [new Error("OOM command not allowed when used memory > 'maxmemory'.")],
    });
    expect(redisErrorKind(execAbort)).toBe('oom');
    expect(redisErrorKind(new Error('connect ECONNREFUSED 127.0.0.1:6379'))).toBe('unreachable');
    expect(redisErrorKind(new Error("Stream isn't writeable and enableOfflineQueue options is false"))).toBe('unreachable');
    expect(redisErrorKind(Object.assign(new Error('Reached the max retries per request limit'), { name: 'MaxRetriesPerRequestError' }))).toBe('unreachable');
    expect(redisErrorKind(new Error('NOSCRIPT No matching script'))).toBe('error');
    expect(redisErrorKind('weird')).toBe('error');
  });
});
