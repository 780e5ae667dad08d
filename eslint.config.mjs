import nx from '@nx/eslint-plugin';
import tseslint from 'typescript-eslint';

export default [
  { ignores: ['**/dist', '**/node_modules', '**/.venv', '**/.stack', '**/tmp', '**/*.cjs', '**/*.mjs', 'apps/ai-worker/**'] },
  ...nx.configs['flat/base'],
  ...nx.configs['flat/typescript'],
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
        // Lets consistent-type-imports keep value imports that Nest's DI reads at run time.
        emitDecoratorMetadata: true,
        experimentalDecorators: true,
      },
    },
    rules: {
      '@nx/enforce-module-boundaries': [
        'error',
        {
          enforceBuildableLibDependency: true,
          banTransitiveDependencies: true,
          allow: [],
          depConstraints: [
            { sourceTag: 'type:app', onlyDependOnLibsWithTags: ['type:lib', 'type:tooling'] },
            { sourceTag: 'type:e2e', onlyDependOnLibsWithTags: ['type:lib', 'type:tooling'] },
            { sourceTag: 'type:lib', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:tooling', onlyDependOnLibsWithTags: ['type:tooling'] },
            { sourceTag: 'scope:shared', onlyDependOnLibsWithTags: ['scope:shared'] },
          ],
        },
      ],
      // A library is used through its index.ts only.
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['@traffic-dam/*/*'], message: 'Import a library through its index: @traffic-dam/<lib>.' }] },
      ],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Test helpers (the stack launcher) are for tests only, never for production code.
    files: ['apps/gateway/src/**/*.ts'],
    ignores: ['**/*.spec.ts', '**/*.integration-spec.ts', 'apps/gateway/src/testing/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: '@traffic-dam/stack', message: 'The stack launcher is for tests only.' }],
          patterns: [{ group: ['@traffic-dam/*/*'], message: 'Import a library through its index: @traffic-dam/<lib>.' }],
        },
      ],
    },
  },
  {
    // Tests of a library may start real services with the stack launcher.
    files: ['libs/**/*.spec.ts', 'libs/**/*.integration-spec.ts'],
    rules: {
      '@nx/enforce-module-boundaries': [
        'error',
        {
          allow: [],
          depConstraints: [
            { sourceTag: 'type:lib', onlyDependOnLibsWithTags: ['type:lib', 'type:tooling'] },
            { sourceTag: 'type:tooling', onlyDependOnLibsWithTags: ['type:tooling'] },
          ],
        },
      ],
    },
  },
];
