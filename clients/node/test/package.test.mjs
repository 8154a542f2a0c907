// The package as an app installs it: `npm pack`, then `npm install <tarball>` into an empty
// project, where `import('onboarding-client')` works and TypeScript sees the shipped types.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const PACKAGE_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
const PACKAGE = JSON.parse(readFileSync(join(PACKAGE_DIR, 'package.json'), 'utf8'));
const work = mkdtempSync(join(tmpdir(), 'onboarding-client-pack-'));
after(() => rmSync(work, { recursive: true, force: true }));

const run = (command, args, cwd) => execFileSync(command, args, { cwd, encoding: 'utf8', stdio: 'pipe' });

test('the packed tarball installs into an empty project and imports as an ES module', () => {
  const [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work], PACKAGE_DIR));
  assert.equal(packed.name, 'onboarding-client');
  assert.equal(packed.version, PACKAGE.version);
  const shipped = packed.files.map((f) => f.path).sort();
  assert.deepEqual(shipped, ['CHANGELOG.md', 'README.md', 'example.mjs', 'onboarding.d.ts', 'onboarding.mjs', 'package.json']);

  const app = join(work, 'app');
  run('mkdir', ['-p', app], work);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  // The peer dependency (redis) comes from npm's cache when the checkout's `npm ci` filled it.
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', join(work, packed.filename)], app);
  const code = "import('onboarding-client').then((m) => console.log(JSON.stringify([m.decisionKey('decisions', 'evt-1'), typeof m.waitForDecision, m.SCHEMA_VERSION, m.appFeedStream('decisions', 'web'), typeof m.feed])))";
  assert.deepEqual(JSON.parse(run('node', ['-e', code], app)), ['decisions:event:evt-1', 'function', 1, 'decisions:app:web', 'function']);

  // The shipped types, checked against the real node-redis client an app passes in.
  writeFileSync(
    join(app, 'check.ts'),
    [
      "import { createClient } from 'redis';",
      "import { RefusedError, appFeedStream, appRefusalsStream, feed, submitSignup, waitForDecision, type Decision, type Refusal } from 'onboarding-client';",
      "const client = createClient({ url: 'redis://127.0.0.1:6379/0' });",
      "const eventId: string = await submitSignup(client, { credit_amount: 4200 }, { userId: 'u-1' });",
      'const decision: Decision | null = await waitForDecision(client, eventId, 1000);',
      '// @ts-expect-error: no decision within the timeout is null',
      'const certain: Decision = await waitForDecision(client, eventId, 1000);',
      'console.log(decision?.score, certain);',
      'try {',
      '  const final = await waitForDecision(client, eventId, 1000, { untilFinal: true });',
      '  const isFinal: boolean | undefined = final?.final;',
      '  const reviewer: string | undefined = final?.review?.reviewer_id;',
      '  console.log(isFinal, reviewer);',
      '} catch (err) {',
      '  if (!(err instanceof RefusedError)) throw err;',
      '  const reason: string = err.refusal.reason;',
      '  const retryable: boolean = err.refusal.retryable;',
      '  console.log(reason, retryable);',
      '}',
      '// @ts-expect-error: untilFinal is a boolean',
      "await waitForDecision(client, eventId, 1000, { untilFinal: 'yes' });",
      "const stop = new AbortController();",
      "for await (const item of feed(client, { app: 'web', group: 'crm', consumer: 'pod-1', signal: stop.signal })) {",
      '  const outcome: Decision = item.decision; // decisions only without refusals: true',
      '  const entryId: string = item.entryId;',
      '  await item.ack();',
      '  console.log(outcome, entryId);',
      '}',
      "for await (const item of feed(client, { app: 'web', group: 'crm', consumer: 'pod-1', refusals: true })) {",
      '  if (item.refusal) {',
      '    const refusal: Refusal = item.refusal;',
      '    console.log(refusal.reason);',
      '  } else {',
      '    const outcome: Decision = item.decision;',
      '    console.log(outcome.decision);',
      '  }',
      '  // @ts-expect-error: with refusals: true an item may be a refusal',
      '  const certainDecision: Decision = item.decision;',
      '  console.log(certainDecision, item.stream);',
      '  await item.ack();',
      '}',
      "const streams: string[] = [appFeedStream('decisions', 'web'), appRefusalsStream('decisions', 'web')];",
      'console.log(streams);',
      '// @ts-expect-error: app is required',
      "feed(client, { group: 'crm', consumer: 'pod-1' });",
      '',
    ].join('\n'),
  );
  const tsconfig = {
    compilerOptions: {
      module: 'nodenext',
      target: 'es2022',
      strict: true,
      noEmit: true,
      types: ['node'],
      typeRoots: [join(PACKAGE_DIR, 'node_modules', '@types')],
    },
    files: ['check.ts'],
  };
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(tsconfig));
  run(process.execPath, [join(PACKAGE_DIR, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], app);
});
