// The module's contract checks (no Redis), then a round trip against a real Redis: skipped
// when TEST_REDIS_URL (default redis://127.0.0.1:6379/15) is unreachable, failed if CI is set.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { createClient } from 'redis';

import {
  ContractError,
  OUTCOMES,
  RefusedError,
  SCHEMA_VERSION,
  decisionKey,
  getDecision,
  intakeStream,
  newEventId,
  parseAnswer,
  parseDecision,
  serviceEventId,
  signupPayload,
  submitSignup,
  waitForDecision,
  waitForFinalDecision,
} from '../onboarding.mjs';

const APPLICATION = { credit_amount: 4200, purpose: 'car_used' };

function decision(eventId, outcome = 'approve') {
  return {
    schema_version: 1,
    event_id: eventId,
    user_id: 'u-1',
    decision: outcome,
    score: 0.12,
    reason_codes: [],
    model_version: 'model-7',
    run_id: `signup__${eventId}`,
    error: null,
    timestamps: { occurred_at: '2026-11-30T10:00:00+00:00' },
  };
}

function refusal(eventId, { reason = 'invalid_value', refusedAt = new Date() } = {}) {
  return {
    kind: 'refusal',
    schema_version: 1,
    event_id: eventId,
    user_id: 'u-1',
    reason,
    message: 'A field has a value the contract does not allow: application.checking_account: ...',
    retryable: false,
    refused_at: refusedAt.toISOString(),
  };
}

function finalDecision(eventId, outcome = 'approve') {
  return {
    ...decision(eventId, outcome),
    final: true,
    review: {
      case_id: eventId,
      reviewer_id: 'rev-7',
      reason: 'documents checked',
      decided_at: '2026-11-30T11:00:00+00:00',
      opened_at: '2026-11-30T10:00:01+00:00',
    },
  };
}

describe('contract checks', () => {
  test('a signup payload is a version 1 event with the ids and a UTC time', () => {
    const when = new Date(Date.UTC(2026, 10, 30, 9, 0, 0, 5));
    const event = JSON.parse(signupPayload(APPLICATION, { userId: 'u-1', eventId: 'evt-1', occurredAt: when }));
    assert.deepEqual(event, {
      schema_version: SCHEMA_VERSION,
      event_id: 'evt-1',
      user_id: 'u-1',
      occurred_at: '2026-11-30T09:00:00.005Z',
      application: APPLICATION,
    });
  });

  test('a signup the service would refuse is refused before it is sent', () => {
    const refuse = (application, options) => assert.throws(() => signupPayload(application, options), ContractError);
    refuse(APPLICATION, { userId: 'u-1', eventId: 'evt with spaces' });
    refuse(APPLICATION, { userId: 'u-1', eventId: 'e'.repeat(129) });
    refuse(APPLICATION, { userId: '', eventId: 'evt-1' });
    refuse([], { userId: 'u-1', eventId: 'evt-1' });
  });

  test('fresh event ids are valid and distinct', () => {
    const ids = new Set(Array.from({ length: 100 }, newEventId));
    assert.equal(ids.size, 100);
    for (const id of ids) assert.match(id, /^evt-[0-9a-f-]{36}$/);
  });

  test('a decision is read; another schema version, an unknown outcome or non-JSON is refused', () => {
    const read = parseDecision(JSON.stringify({ ...decision('evt-1', 'review'), later_property: true }));
    assert.equal(read.decision, 'review');
    assert.equal(read.later_property, true); // unknown properties are kept
    assert.deepEqual(OUTCOMES, ['approve', 'review', 'decline']);
    assert.throws(() => parseDecision(JSON.stringify({ ...decision('evt-1'), schema_version: 2 })), /schema_version 2/);
    assert.throws(() => parseDecision(JSON.stringify(decision('evt-1', 'maybe'))), ContractError);
    assert.throws(() => parseDecision('{not json'), ContractError);
  });

  test('a refusal is told apart from a decision and thrown as RefusedError, not ContractError', () => {
    const answer = parseAnswer(JSON.stringify({ ...refusal('evt-1'), later_property: 1 }));
    assert.equal(answer.kind, 'refusal');
    assert.equal(answer.later_property, 1);
    let thrown;
    try {
      parseDecision(JSON.stringify(refusal('evt-1')));
    } catch (err) {
      thrown = err;
    }
    assert.ok(thrown instanceof RefusedError && !(thrown instanceof ContractError));
    assert.equal(thrown.refusal.reason, 'invalid_value');
    assert.equal(thrown.refusal.retryable, false);
    assert.match(thrown.message, /evt-1 refused \(invalid_value\)/);
    assert.throws(() => parseAnswer(JSON.stringify({ ...refusal('evt-1'), schema_version: 2 })), ContractError);
    assert.throws(() => parseAnswer(JSON.stringify({ kind: 'refusal', schema_version: 1 })), /refusal without/);
  });

  test('final is read, or derived for a decision published before it existed; review is kept', () => {
    for (const [outcome, final] of [['approve', true], ['decline', true], ['review', false]]) {
      const read = parseDecision(JSON.stringify(decision('evt-1', outcome)));
      assert.equal(read.final, final);
      assert.equal(read.review, null);
    }
    const reviewed = parseDecision(JSON.stringify(finalDecision('evt-1', 'decline')));
    assert.equal(reviewed.final, true);
    assert.equal(reviewed.review.reviewer_id, 'rev-7');
  });

  test('an event id ending in a newline is refused before it is sent', () => {
    assert.throws(() => signupPayload(APPLICATION, { userId: 'u-1', eventId: 'evt-1\n' }), ContractError);
  });

  test('the decision key is the stream name, ":event:" and the event id', () => {
    assert.equal(decisionKey('decisions', 'evt-1'), 'decisions:event:evt-1');
  });
});

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/15';

async function connectOrSkip() {
  const client = createClient({ url: REDIS_URL, socket: { reconnectStrategy: false, connectTimeout: 2000 } });
  client.on('error', () => {});
  try {
    await client.connect();
    return client;
  } catch (err) {
    if (process.env.CI) throw new Error(`Redis at ${REDIS_URL} is required in CI: ${err.message}`);
    return null;
  }
}

describe('against a real Redis', async () => {
  const client = await connectOrSkip();
  const prefix = `node-client-test-${process.pid}`;
  const signups = `${prefix}:signups`;
  const decisions = `${prefix}:decisions`;
  const options = { skip: client === null ? `Redis at ${REDIS_URL} is unreachable` : false };

  before(async () => client && (await client.del([signups, decisions])));
  after(async () => {
    if (!client) return;
    const keys = await client.keys(`${prefix}:*`);
    if (keys.length) await client.del(keys);
    await client.close();
  });

  test('a submitted signup is on the signups stream as its payload', options, async () => {
    const eventId = await submitSignup(client, APPLICATION, { userId: 'u-1', signupsStream: signups });
    const entries = await client.xRange(signups, '-', '+');
    assert.equal(entries.length, 1);
    const event = JSON.parse(entries[0].message.payload);
    assert.equal(event.event_id, eventId);
    assert.deepEqual(event.application, APPLICATION);
  });

  test('with app, a signup goes to the app intake and the answer is read under <app>:<id>', options, async () => {
    const eventId = await submitSignup(client, APPLICATION, { userId: 'u-2', signupsStream: signups, app: 'web' });
    const entries = await client.xRange(intakeStream(signups, 'web'), '-', '+');
    assert.equal(JSON.parse(entries[0].message.payload).event_id, eventId);
    const key = decisionKey(decisions, serviceEventId('web', eventId));
    assert.equal(key, `${decisions}:event:web:${eventId}`);
    const waiting = waitForDecision(client, eventId, 10_000, { decisionsStream: decisions, app: 'web' });
    setTimeout(async () => {
      const text = JSON.stringify(decision(`web:${eventId}`, 'approve'));
      await client.set(key, text);
      await client.publish(key, text);
    }, 200);
    assert.equal((await waiting)?.event_id, `web:${eventId}`);
    assert.equal((await getDecision(client, eventId, { decisionsStream: decisions, app: 'web' }))?.decision, 'approve');
    await assert.rejects(
      submitSignup(client, APPLICATION, { userId: 'u-3', eventId: 'e'.repeat(125), signupsStream: signups, app: 'web' }),
      ContractError,
    );
  });

  test('a decision published while waiting arrives on the channel', options, async () => {
    const eventId = newEventId();
    const key = decisionKey(decisions, eventId);
    const waiting = waitForDecision(client, eventId, 10_000, { decisionsStream: decisions });
    // Published like the service's publish step: the key, then the announcement. Until the
    // waiter has subscribed, the key alone answers it.
    setTimeout(async () => {
      const text = JSON.stringify(decision(eventId, 'decline'));
      await client.set(key, text);
      await client.publish(key, text);
    }, 200);
    const started = Date.now();
    const found = await waiting;
    assert.equal(found?.decision, 'decline');
    assert.ok(Date.now() - started < 5_000);
  });

  test('a decision already out is read at once; none within the timeout is null', options, async () => {
    const eventId = newEventId();
    await client.set(decisionKey(decisions, eventId), JSON.stringify(decision(eventId)));
    assert.equal((await waitForDecision(client, eventId, 5_000, { decisionsStream: decisions }))?.decision, 'approve');
    assert.equal((await getDecision(client, eventId, { decisionsStream: decisions }))?.event_id, eventId);
    const started = Date.now();
    assert.equal(await waitForDecision(client, newEventId(), 300, { decisionsStream: decisions }), null);
    assert.ok(Date.now() - started >= 290);
  });

  test('a refusal written to the key and announced is thrown by the wait, distinct from a timeout', options, async () => {
    const eventId = await submitSignup(client, APPLICATION, { userId: 'u-1', signupsStream: signups });
    assert.equal(await waitForDecision(client, eventId, 200, { decisionsStream: decisions }), null);
    const key = decisionKey(decisions, eventId);
    // Written like the listener's refusal: the key, then the announcement (never the stream).
    setTimeout(async () => {
      const text = JSON.stringify(refusal(eventId));
      await client.set(key, text);
      await client.publish(key, text);
    }, 200);
    const started = Date.now();
    await assert.rejects(waitForDecision(client, eventId, 10_000, { decisionsStream: decisions }), (err) => {
      assert.ok(err instanceof RefusedError);
      assert.equal(err.refusal.event_id, eventId);
      assert.equal(err.refusal.reason, 'invalid_value');
      return true;
    });
    assert.ok(Date.now() - started < 5_000);
    await assert.rejects(getDecision(client, eventId, { decisionsStream: decisions }), RefusedError);
    await assert.rejects(waitForFinalDecision(client, eventId, 1_000, { decisionsStream: decisions }), RefusedError);
  });

  test('a fixed signup sent again with the same id is not answered by the earlier refusal', options, async () => {
    const eventId = newEventId();
    const key = decisionKey(decisions, eventId);
    await client.set(key, JSON.stringify(refusal(eventId, { refusedAt: new Date(Date.now() - 3_600_000) })));
    await assert.rejects(getDecision(client, eventId, { decisionsStream: decisions }), RefusedError);
    await submitSignup(client, APPLICATION, { userId: 'u-1', eventId, signupsStream: signups }); // fixed
    assert.equal(await getDecision(client, eventId, { decisionsStream: decisions }), null);
    setTimeout(async () => {
      const text = JSON.stringify(decision(eventId));
      await client.set(key, text);
      await client.publish(key, text);
    }, 200);
    assert.equal((await waitForDecision(client, eventId, 10_000, { decisionsStream: decisions }))?.decision, 'approve');
  });

  test('untilFinal waits through the provisional review to the final decision', options, async () => {
    const eventId = newEventId();
    const key = decisionKey(decisions, eventId);
    await client.set(key, JSON.stringify({ ...decision(eventId, 'review'), final: false }));
    const provisional = await waitForDecision(client, eventId, 5_000, { decisionsStream: decisions });
    assert.equal(provisional?.decision, 'review');
    assert.equal(provisional?.final, false);
    assert.equal(await waitForFinalDecision(client, eventId, 300, { decisionsStream: decisions }), null);
    const waiting = waitForDecision(client, eventId, 10_000, { decisionsStream: decisions, untilFinal: true });
    setTimeout(async () => {
      const review = JSON.stringify({ ...decision(eventId, 'review'), final: false });
      await client.publish(key, review); // an announcement of the review again does not end the wait
      const text = JSON.stringify(finalDecision(eventId, 'decline'));
      await client.set(key, text);
      await client.publish(key, text);
    }, 200);
    const started = Date.now();
    const final = await waiting;
    assert.ok(Date.now() - started >= 150 && Date.now() - started < 5_000);
    assert.equal(final?.decision, 'decline');
    assert.equal(final?.final, true);
    assert.equal(final?.review?.reviewer_id, 'rev-7');
  });
});
