// One place for the three test tiers; each project's jest config picks its tier.
const path = require('node:path');
const { pathsToModuleNameMapper } = require('ts-jest');
const { compilerOptions } = require('./tsconfig.base.json');

function base(projectDir, testMatch, extra = {}) {
  return {
    rootDir: projectDir,
    testEnvironment: 'node',
    testMatch,
    transform: {
      '^.+\\.ts$': ['ts-jest', { tsconfig: path.join(projectDir, 'tsconfig.json') }],
    },
    moduleFileExtensions: ['ts', 'js', 'json'],
    moduleNameMapper: pathsToModuleNameMapper(compilerOptions.paths, { prefix: `${__dirname}/` }),
    ...extra,
  };
}

module.exports = {
  unit: (dir) => base(dir, ['<rootDir>/src/**/*.spec.ts']),
  integration: (dir) =>
    // forceExit, as for e2e: an in-process gateway whose boot failed half-way (the NOAUTH test)
    // cannot always be closed, and its reconnecting clients must not hang CI.
    base(dir, ['<rootDir>/src/**/*.integration-spec.ts'], { testTimeout: 60_000, forceExit: true }),
  e2e: (dir) =>
    // forceExit: a stuck client socket after a failed e2e test must not hang CI; leaks are
    // asserted by the tests themselves (sessions, slots, processes), not by jest's handle count.
    base(dir, ['<rootDir>/src/**/*.e2e-spec.ts'], { testTimeout: 180_000, maxWorkers: 1, forceExit: true }),
};
