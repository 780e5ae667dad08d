import { GatewayException } from '../common/errors';
import { parseBearer, parseQuestionBody } from './question-body';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof GatewayException ? e.code : 'other';
  }
  return undefined;
}

describe('parseQuestionBody', () => {
  it('returns the question', () => {
    expect(parseQuestionBody({ question: 'why?' }, 10)).toBe('why?');
  });

  it.each([
    ['null', null],
    ['an array', ['q']],
    ['a string', 'q'],
    ['no question', {}],
    ['a number question', { question: 4 }],
    ['an empty question', { question: '' }],
    ['a blank question', { question: '  \n ' }],
    ['an unknown field', { question: 'q', extra: 1 }],
  ])('refuses %s with 400', (_, body) => {
    expect(codeOf(() => parseQuestionBody(body, 10))).toBe('bad_request');
  });

  it('counts code points, so emoji are one character each', () => {
    expect(parseQuestionBody({ question: '😀'.repeat(10) }, 10)).toHaveLength(20);
    expect(codeOf(() => parseQuestionBody({ question: '😀'.repeat(11) }, 10))).toBe('question_too_large');
  });
});

describe('parseBearer', () => {
  it('reads a bearer token', () => {
    expect(parseBearer('Bearer abc-_DEF')).toBe('abc-_DEF');
    expect(parseBearer('bearer abc')).toBe('abc');
  });

  it.each([undefined, '', 'Basic abc', 'Bearer', 'Bearer a b'])('refuses %p', (h) => {
    expect(parseBearer(h)).toBeNull();
  });
});
