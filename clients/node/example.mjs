#!/usr/bin/env node
// Submit one signup to the onboarding decision service and print its decision.
//
//   node example.mjs [--timeout-s N] [--user-id ID] [--event-id ID] [--until-final] [APPLICATION.json]
//
// Environment: REDIS_URL (default redis://127.0.0.1:6379/0; a user with the `app` ACL role),
// SIGNUPS_STREAM (signups), DECISIONS_STREAM (decisions), DECISION_TIMEOUT_S (30).
// APPLICATION.json holds an application object (or a whole signup event, whose
// `application` is used); without it, the sample below is sent.
// --until-final waits through a provisional `review` to the reviewer's final decision.
// Prints the decision (JSON) on stdout, progress on stderr. Exit status: 0 decided,
// 1 no decision within the timeout, 2 a Redis error, 3 bad input or an unreadable decision,
// 4 the service refused the signup (the refusal, JSON, on stdout).

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { createClient } from 'redis';

import { ContractError, RefusedError, decisionKey, submitSignup, waitForDecision } from './onboarding.mjs';

// A valid application (onboarding/schemas/signup.v1.json): an applicant of the credit data set.
const SAMPLE_APPLICATION = {
  checking_account: 'under_200',
  duration_months: 24,
  credit_history: 'existing_paid_duly',
  purpose: 'car_used',
  credit_amount: 4200,
  savings: '100_to_500',
  employment_since: '1_to_4_years',
  installment_rate_pct: 3,
  other_debtors: 'none',
  residence_since: 2,
  property: 'car_or_other',
  age_years: 31,
  other_installment_plans: 'none',
  housing: 'rent',
  existing_credits: 1,
  job: 'skilled',
  dependents: 1,
  has_telephone: true,
};

const EXIT = { decided: 0, timeout: 1, redis: 2, input: 3, refused: 4 };

class UsageError extends Error {}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        'timeout-s': { type: 'string' },
        'user-id': { type: 'string' },
        'event-id': { type: 'string' },
        'until-final': { type: 'boolean' },
      },
      allowPositionals: true,
    });
  } catch (err) {
    throw new UsageError(err.message);
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1) throw new UsageError('at most one APPLICATION.json');
  const timeoutText = values['timeout-s'] ?? process.env.DECISION_TIMEOUT_S ?? '30';
  const timeoutS = Number(timeoutText);
  if (!Number.isFinite(timeoutS) || timeoutS <= 0) {
    throw new UsageError(`timeout ${JSON.stringify(timeoutText)} is not a positive number of seconds`);
  }
  let application = SAMPLE_APPLICATION;
  if (positionals.length === 1) {
    let data;
    try {
      data = JSON.parse(readFileSync(positionals[0], 'utf8'));
    } catch (err) {
      throw new UsageError(`${positionals[0]}: ${err.message}`);
    }
    application = data !== null && typeof data === 'object' && 'application' in data ? data.application : data;
  }
  return {
    url: process.env.REDIS_URL || 'redis://127.0.0.1:6379/0',
    signupsStream: process.env.SIGNUPS_STREAM || 'signups',
    decisionsStream: process.env.DECISIONS_STREAM || 'decisions',
    timeoutS,
    userId: values['user-id'] ?? `node-example-${process.pid}`,
    eventId: values['event-id'],
    untilFinal: values['until-final'] ?? false,
    application,
  };
}

/** The URL without its password, for messages. */
function safeUrl(url) {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable REDIS_URL)';
  }
}

async function main() {
  let opts;
  try {
    opts = options();
  } catch (err) {
    console.error(`error: ${err.message}`);
    return EXIT.input;
  }
  const client = createClient({
    url: opts.url,
    socket: {
      connectTimeout: 5000,
      // A few quick retries, then give up: an example should fail, not hang.
      reconnectStrategy: (retries, cause) => (retries >= 3 ? cause : 200 * 2 ** retries),
    },
  });
  client.on('error', () => {}); // each failure also rejects the command that met it
  try {
    await client.connect();
    const eventId = await submitSignup(client, opts.application, {
      userId: opts.userId,
      eventId: opts.eventId,
      signupsStream: opts.signupsStream,
    });
    const channel = decisionKey(opts.decisionsStream, eventId);
    console.error(`submitted ${eventId} to ${opts.signupsStream}; waiting up to ${opts.timeoutS} s on ${channel}`);
    const decision = await waitForDecision(client, eventId, opts.timeoutS * 1000, {
      decisionsStream: opts.decisionsStream,
      untilFinal: opts.untilFinal,
    });
    if (decision === null) {
      console.error(
        `timeout: no ${opts.untilFinal ? 'final ' : ''}decision for ${eventId} within ${opts.timeoutS} s. ` +
          `It will still be decided: look it up later with GET ${channel}, or check that the service runs.`,
      );
      return EXIT.timeout;
    }
    console.log(JSON.stringify(decision));
    return EXIT.decided;
  } catch (err) {
    if (err instanceof RefusedError) {
      console.log(JSON.stringify(err.refusal));
      const what = err.refusal.retryable
        ? 'the service failed on it; the operators replay it and a decision follows'
        : 'fix the signup and send it again (the same --event-id may be reused)';
      console.error(`refused (${err.refusal.reason}): ${err.refusal.message}\n${what}`);
      return EXIT.refused;
    }
    if (err instanceof ContractError) {
      console.error(`error: ${err.message}`);
      return EXIT.input;
    }
    console.error(`redis error (${safeUrl(opts.url)}): ${err.message || err.code || err}`);
    return EXIT.redis;
  } finally {
    try {
      if (client.isOpen) await client.close();
      else client.destroy();
    } catch {
      // already closed
    }
  }
}

process.exitCode = await main();
