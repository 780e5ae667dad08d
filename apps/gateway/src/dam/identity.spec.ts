import { createSecretKey } from 'node:crypto';
import type { Request } from 'express';
import jwt from 'jsonwebtoken';
import { GatewayException } from '../common/errors';
import { resolveIdentity, type IdentityOptions } from './identity';

const secret = 'x'.repeat(40);
const base: IdentityOptions = { jwtSecret: secret, jwtRequired: true, limitByIp: false };

function req(authorization?: string, ip = '10.1.2.3'): Request {
  return { headers: authorization ? { authorization } : {}, ip } as unknown as Request;
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'none';
  } catch (e) {
    return e instanceof GatewayException ? e.code : 'other';
  }
}

describe('resolveIdentity', () => {
  it('takes the sub of a valid HS256 JWT', () => {
    const token = jwt.sign({ sub: 'alice' }, secret, { algorithm: 'HS256', expiresIn: 60 });
    expect(resolveIdentity(req(`Bearer ${token}`), base)).toBe('jwt:alice');
  });

  it.each([
    ['a forged signature', () => jwt.sign({ sub: 'alice' }, 'y'.repeat(40), { algorithm: 'HS256' })],
    ['an expired token', () => jwt.sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 60 }, secret, { algorithm: 'HS256' })],
    ['alg none', () => `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"alice"}').toString('base64url')}.`],
    ['garbage', () => 'not.a.jwt'],
    ['no sub', () => jwt.sign({ name: 'alice' }, secret, { algorithm: 'HS256' })],
  ])('refuses %s with 401 invalid_credentials', (_, make) => {
    expect(codeOf(() => resolveIdentity(req(`Bearer ${make()}`), base))).toBe('invalid_credentials');
  });

  it('verifies the same with the secret as a KeyObject made once, as the gateway gives it', () => {
    const keyed: IdentityOptions = { ...base, jwtSecret: createSecretKey(Buffer.from(secret, 'utf8')) };
    const token = jwt.sign({ sub: 'alice' }, secret, { algorithm: 'HS256', expiresIn: 60 });
    expect(resolveIdentity(req(`Bearer ${token}`), keyed)).toBe('jwt:alice');
    const forged = jwt.sign({ sub: 'alice' }, 'y'.repeat(40), { algorithm: 'HS256' });
    expect(codeOf(() => resolveIdentity(req(`Bearer ${forged}`), keyed))).toBe('invalid_credentials');
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"alice"}').toString('base64url')}.`;
    expect(codeOf(() => resolveIdentity(req(`Bearer ${none}`), keyed))).toBe('invalid_credentials');
  });

  it('asks for a token when JWT is required and none came', () => {
    expect(codeOf(() => resolveIdentity(req(), base))).toBe('missing_token');
  });

  it('is anonymous without JWT config unless limits by IP are on', () => {
    expect(resolveIdentity(req(), { jwtRequired: false, limitByIp: false })).toBeNull();
    expect(resolveIdentity(req(), { jwtRequired: false, limitByIp: true })).toBe('ip:10.1.2.3');
  });

  it('ignores an unverified X-Forwarded-For: the IP comes from req.ip only', () => {
    const r = { headers: { 'x-forwarded-for': '6.6.6.6' }, ip: '10.1.2.3' } as unknown as Request;
    expect(resolveIdentity(r, { jwtRequired: false, limitByIp: true })).toBe('ip:10.1.2.3');
  });
});
