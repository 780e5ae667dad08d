// tsc emits (it alone writes the decorator metadata Nest's DI reads), then esbuild bundles
// our own code into one file and resolves the @traffic-dam/* aliases; npm packages stay external.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const out = join(root, 'dist/out-tsc/gateway');
rmSync(out, { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'apps/gateway/tsconfig.app.json')], {
  stdio: 'inherit',
});

const aliases = Object.fromEntries(
  ['ai-bridge', 'dam', 'redis-script'].map((lib) => [`@traffic-dam/${lib}`, join(out, `libs/${lib}/src/index.js`)]),
);
await build({
  entryPoints: [join(out, 'apps/gateway/src/main.js')],
  outfile: join(root, 'dist/apps/gateway/main.js'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  packages: 'external',
  sourcemap: true,
  alias: aliases,
  logLevel: 'warning',
});
console.log('built dist/apps/gateway/main.js');
