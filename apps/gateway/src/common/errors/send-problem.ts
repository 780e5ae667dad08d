import type { Response } from 'express';
import type { ProblemResponse } from './problem';
import { markProblem } from './refusal';

export function sendProblem(res: Response, problem: ProblemResponse, instance: string): void {
  markProblem(res, problem.body.code);
  res.status(problem.status);
  for (const [k, v] of Object.entries(problem.headers)) res.setHeader(k, v);
  res.setHeader('Content-Type', 'application/problem+json');
  res.send(JSON.stringify({ ...problem.body, instance }));
}
