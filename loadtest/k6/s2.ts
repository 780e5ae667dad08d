// k6 run loadtest/k6/s2.ts -e BASE_URL=http://127.0.0.1:8080 [-e TIME_SCALE=0.1] [-e JWT_SECRET=...]
// The scenario is loadtest/scenarios/s2.json, the same file `npm run loadtest -- s2` runs.
import { abuserIteration, optionsFrom, userIteration } from './lib.ts';

export const options = optionsFrom(open('../scenarios/s2.json'));
export const lifecycle = userIteration;
export const abuser = abuserIteration;
