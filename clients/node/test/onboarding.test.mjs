// The module's contract checks (no Redis), then a round trip against a real Redis: skipped
// when TEST_REDIS_URL (default redis://127.0.0.1:6379/15) is unreachable, failed if CI is set.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { createClient } from 'redis';

import {
  ContractError,
  OUTCOMES,
  RefusedError,
  SCHEMA_VERSION,
  appFeedStream,
  appRefusalsStream,
  decisionKey,
  feed,
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

  test("an app's feed streams are named after the decisions stream and the app", () => {
    assert.equal(appFeedStream('decisions', 'web'), 'decisions:app:web');
    assert.equal(appRefusalsStream('decisions', 'web'), 'decisions:app:web:refusals');
  });

  test('a feed without app, with a bad app name, or without group or consumer is refused at once', () => {
    const client = {}; // never used: the options are checked first
    assert.throws(() => feed(client, { group: 'crm', consumer: 'pod-1' }), ContractError);
    assert.throws(() => feed(client), ContractError);
    assert.throws(() => feed(client, { app: 'Web!', group: 'crm', consumer: 'pod-1' }), ContractError);
    assert.throws(() => feed(client, { app: 'web', consumer: 'pod-1' }), ContractError);
    assert.throws(() => feed(client, { app: 'web', group: 'crm' }), ContractError);
  });
});

async function waitFor(condition, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms`);
    await sleep(20);
  }
}

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
  describe('the feed', () => {
    // Each test its own decisions stream name, deleted after it.
    const fresh = () => `${prefix}:feed-${randomUUID()}:decisions`;
    const entry = (answer) => ({ event_id: answer.event_id, payload: JSON.stringify(answer) });
    const drop = async (decisionsStream) => {
      const keys = await client.keys(`${decisionsStream}*`);
      if (keys.length) await client.del(keys);
    };
    // One web app's feed streams under a fresh name, the usual options, and every feed opened
    // through `opened`; `close()` stops them all and deletes the streams.
    function scenario(extra = {}, on = client) {
      const decisionsStream = fresh();
      const feeds = [];
      return {
        stream: appFeedStream(decisionsStream, 'web'),
        refusalsStream: appRefusalsStream(decisionsStream, 'web'),
        opts: { app: 'web', group: 'crm', consumer: 'pod-1', decisionsStream, start: '0', blockMs: 200, ...extra },
        opened: (o) => feeds[feeds.push(open(o, on)) - 1],
        async close() {
          for (const f of feeds) await f.close();
          await drop(decisionsStream);
        },
      };
    }
    // A feed stopped by its own AbortController (an async generator's return() waits for a
    // next() in flight, which a blocking feed may never settle; the abort does).
    function open(feedOptions, on = client) {
      const controller = new AbortController();
      const items = feed(on, { ...feedOptions, signal: controller.signal });
      let inFlight = null;
      const next = async (ms) => {
        const pending = inFlight ?? items.next();
        inFlight = pending;
        const got = await Promise.race([pending, sleep(ms).then(() => 'timeout')]);
        if (got !== 'timeout') inFlight = null;
        return got;
      };
      return {
        // The next `n` items, within `ms`.
        async take(n, ms = 5_000) {
          const got = [];
          const deadline = Date.now() + ms;
          while (got.length < n) {
            const step = await next(Math.max(0, deadline - Date.now()));
            if (step === 'timeout') throw new Error(`only ${got.length} of ${n} feed items within ${ms} ms`);
            if (step.done) break;
            got.push(step.value);
          }
          return got;
        },
        // Nothing within `ms`: true.
        async nothing(ms = 600) {
          return (await next(ms)) === 'timeout';
        },
        async close() {
          controller.abort();
          if (inFlight) assert.deepEqual(await inFlight, { value: undefined, done: true });
          inFlight = null;
          await items.return();
        },
      };
    }
    const pendingIds = async (stream, group) => (await client.xPendingRange(stream, group, '-', '+', 100)).map((p) => p.id);

    test('a decision on the app feed is yielded parsed; ack removes it from the pending entries', options, async () => {
      const decisions = fresh();
      const stream = appFeedStream(decisions, 'web');
      const controller = new AbortController();
      const items = feed(client, { app: 'web', group: 'crm', consumer: 'pod-1', decisionsStream: decisions, blockMs: 200, signal: controller.signal });
      try {
        const first = items.next(); // creates the group at '$', then blocks
        await waitFor(async () => (await client.xInfoGroups(stream).catch(() => [])).length === 1);
        const entryId = await client.xAdd(stream, '*', entry(decision('web:evt-1', 'review')));
        const { value: item } = await first;
        assert.equal(item.entryId, entryId);
        assert.equal(item.stream, stream);
        assert.equal(item.decision.event_id, 'web:evt-1');
        assert.equal(item.decision.decision, 'review');
        assert.equal(item.decision.final, false); // parsed: derived by parseDecision
        assert.equal(item.refusal, undefined);
        assert.deepEqual(await pendingIds(stream, 'crm'), [entryId]);
        await item.ack();
        assert.deepEqual(await pendingIds(stream, 'crm'), []);
        controller.abort();
        assert.deepEqual(await items.next(), { value: undefined, done: true });
      } finally {
        controller.abort();
        await items.return();
        await drop(decisions);
      }
    });

    test('an unacknowledged entry comes back to a new feed of the same consumer, before new ones', options, async () => {
      const { stream, opts, opened, close } = scenario();
      try {
        const old = await client.xAdd(stream, '*', entry(decision('web:evt-1')));
        const before = opened(opts);
        const [unacked] = await before.take(1);
        assert.equal(unacked.entryId, old);
        await before.close(); // stopped without acknowledging (a crash, a restart)
        const fresher = await client.xAdd(stream, '*', entry(decision('web:evt-2', 'decline')));
        const other = await opened({ ...opts, consumer: 'pod-2' }).take(1);
        assert.deepEqual(other.map((i) => i.entryId), [fresher]); // another consumer: only the new one
        await other[0].ack();
        const newest = await client.xAdd(stream, '*', entry(decision('web:evt-3')));
        const got = await opened(opts).take(2);
        assert.deepEqual(got.map((i) => i.entryId), [old, newest]); // its own pending entry first
        assert.deepEqual(got.map((i) => i.decision.event_id), ['web:evt-1', 'web:evt-3']);
        for (const item of got) await item.ack();
        assert.deepEqual(await pendingIds(stream, 'crm'), []);
      } finally {
        await close();
      }
    });

    test('a refusal on the refusals stream is yielded, as a refusal, only with refusals: true', options, async () => {
      const { stream, refusalsStream, opts, opened, close } = scenario();
      try {
        const refused = await client.xAdd(refusalsStream, '*', entry(refusal('web:evt-9')));
        const decided = await client.xAdd(stream, '*', entry(decision('web:evt-1')));
        const decisionsOnly = opened(opts);
        const [only] = await decisionsOnly.take(1);
        assert.equal(only.entryId, decided);
        await only.ack();
        assert.ok(await decisionsOnly.nothing()); // the refusal is not read
        await decisionsOnly.close();
        assert.equal((await client.xInfoGroups(refusalsStream)).length, 0); // not even a group there

        const both = opened({ ...opts, refusals: true });
        const [item] = await both.take(1);
        assert.equal(item.entryId, refused);
        assert.equal(item.stream, refusalsStream);
        assert.equal(item.decision, undefined);
        assert.equal(item.refusal.kind, 'refusal');
        assert.equal(item.refusal.event_id, 'web:evt-9');
        assert.equal(item.refusal.reason, 'invalid_value');
        assert.equal(item.refusal.retryable, false);
        assert.deepEqual(await pendingIds(refusalsStream, 'crm'), [refused]);
        await item.ack();
        assert.deepEqual(await pendingIds(refusalsStream, 'crm'), []);
        // New entries on both streams, read by the one blocking XREADGROUP over both.
        const next = both.take(2);
        await sleep(100);
        await client.xAdd(refusalsStream, '*', entry(refusal('web:evt-10')));
        await client.xAdd(stream, '*', entry(decision('web:evt-11', 'decline')));
        const got = await next;
        const seen = got.map((i) => (i.refusal ? `refusal ${i.refusal.event_id}` : `decision ${i.decision.event_id}`));
        assert.deepEqual(seen.sort(), ['decision web:evt-11', 'refusal web:evt-10']);
        for (const i of got) await i.ack();
        assert.deepEqual([...(await pendingIds(stream, 'crm')), ...(await pendingIds(refusalsStream, 'crm'))], []);
      } finally {
        await close();
      }
    });

    test("another app's feed is not read", options, async () => {
      const decisions = fresh();
      const mobile = [appFeedStream(decisions, 'mobile'), appRefusalsStream(decisions, 'mobile')];
      const web = open({ app: 'web', group: 'crm', consumer: 'pod-1', decisionsStream: decisions, start: '0', blockMs: 200, refusals: true });
      try {
        await client.xAdd(mobile[0], '*', entry(decision('mobile:evt-1')));
        await client.xAdd(mobile[1], '*', entry(refusal('mobile:evt-2')));
        const mine = await client.xAdd(appFeedStream(decisions, 'web'), '*', entry(decision('web:evt-3')));
        const [item] = await web.take(1);
        assert.equal(item.entryId, mine);
        assert.equal(item.decision.event_id, 'web:evt-3');
        await item.ack();
        assert.ok(await web.nothing());
        for (const stream of mobile) assert.equal((await client.xInfoGroups(stream)).length, 0);
      } finally {
        await web.close();
        await drop(decisions);
      }
    });

    test('an entry trimmed while pending is acknowledged and skipped (RESP3 and RESP2)', options, async () => {
      // The reply shapes differ; node-redis 6 defaults to RESP3.
      const resp2 = createClient({ url: REDIS_URL, RESP: 2, socket: { reconnectStrategy: false, connectTimeout: 2000 } });
      resp2.on('error', () => {});
      await resp2.connect();
      for (const [on, refusals] of [[client, false], [client, true], [resp2, false]]) {
        const { stream, opts, opened, close } = scenario({ refusals }, on);
        try {
          const trimmed = await client.xAdd(stream, '*', entry(decision('web:evt-1')));
          const kept = await client.xAdd(stream, '*', entry(decision('web:evt-2')));
          const first = opened(opts);
          assert.equal((await first.take(2)).length, 2); // both delivered, neither acknowledged
          await first.close();
          await client.xTrim(stream, 'MAXLEN', 1); // the service's cap, while they are pending
          assert.deepEqual(await pendingIds(stream, 'crm'), [trimmed, kept]);
          const again = opened(opts);
          const [item] = await again.take(1);
          assert.equal(item.entryId, kept);
          assert.equal(item.decision.event_id, 'web:evt-2');
          assert.deepEqual(await pendingIds(stream, 'crm'), [kept]); // the trimmed one acknowledged
          await item.ack();
          assert.ok(await again.nothing(400));
          assert.deepEqual(await pendingIds(stream, 'crm'), []);
        } finally {
          await close();
        }
      }
      await resp2.close();
    });

    test('an abort ends a feed blocked in its read at once, and one already aborted reads nothing', options, async () => {
      const decisions = fresh();
      const stream = appFeedStream(decisions, 'web');
      try {
        const controller = new AbortController();
        const items = feed(client, { app: 'web', group: 'crm', consumer: 'pod-1', decisionsStream: decisions, blockMs: 30_000, signal: controller.signal });
        const next = items.next();
        await waitFor(async () => (await client.xInfoGroups(stream).catch(() => [])).length === 1);
        await sleep(100); // blocked in XREADGROUP BLOCK 30000
        const started = Date.now();
        controller.abort();
        assert.deepEqual(await next, { value: undefined, done: true });
        assert.ok(Date.now() - started < 1_000);
        assert.ok(client.isReady); // the app's client is untouched

        const aborted = feed(client, { app: 'web', group: 'other', consumer: 'pod-1', decisionsStream: decisions, signal: AbortSignal.abort() });
        assert.deepEqual(await aborted.next(), { value: undefined, done: true });
        assert.equal((await client.xInfoGroups(stream)).length, 1); // no group 'other'
      } finally {
        await drop(decisions);
      }
    });
  });
});
