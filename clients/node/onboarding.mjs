// The onboarding decision service's Redis contract for a Node.js app (docs/integration.md):
//
//   submit:  XADD <signups> * payload <signup JSON>            (onboarding/schemas/signup.v1.json)
//   wait:    SUBSCRIBE <decisions>:event:<id>, then GET the key of the same name
//            (an answer published before is found by GET, one published after arrives
//            on the channel); after the timeout GET once more  (decision.v1.json)
//   answer:  a decision, or a refusal (refusal.v1.json, `kind: "refusal"`: the listener
//            dead-lettered the signup), thrown as RefusedError. A `review` is provisional
//            (`final: false`): the reviewer's final decision later overwrites the key and is
//            announced on the channel; `{ untilFinal: true }` waits for it.
//
// `client` is a connected node-redis client (`createClient({ url })`) whose user is the app's
// own `app-<name>` user: pass `{ app: '<name>' }` to every call. The signup then goes to the
// app's intake stream `<signups>:app:<name>` and the service decides it as `<name>:<id>`; its
// answer is under `<decisions>:event:<name>:<id>` (key and channel), the only answers that
// user may read. Without `app`, the deprecated shared `app` user and stream. Nothing here
// scans a stream.
//
//   feed:    XGROUP CREATE <decisions>:app:<name> <group> <start> MKSTREAM (and on
//            <decisions>:app:<name>:refusals with `refusals: true`), then XREADGROUP GROUP
//            <group> <consumer>: this consumer's pending entries first (id 0), then new ones
//            (>), BLOCK on a duplicate of the client; XACK each entry once it is handled.

import { randomUUID } from 'node:crypto';

export const SCHEMA_VERSION = 1;
export const OUTCOMES = Object.freeze(['approve', 'review', 'decline']);
// No `m` flag: `$` is the end of the text, so "evt-1\n" does not match.
const EVENT_ID = /^[A-Za-z0-9][A-Za-z0-9._:~+-]{0,127}$/;
// A refusal under the key from this much before this client's latest XADD of the same
// event id answers an earlier send (the app fixed the signup and sent it again with the
// same id): it is not this send's answer. The margin absorbs clock skew between the Redis
// server (the XADD's time) and the listener (`refused_at`).
export const STALE_REFUSAL_MARGIN_MS = 2000;
const REMEMBERED_SENDS = 10_000;

/** A signup the service would refuse, or an answer this module cannot read. */
export class ContractError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ContractError';
  }
}

/** The service refused the signup (dead-lettered, never assessed): an outcome, not a bug
 * in the app. `refusal` says why (refusal.v1.json). */
export class RefusedError extends Error {
  constructor(refusal) {
    super(`signup ${refusal.event_id} refused (${refusal.reason}): ${refusal.message}`);
    this.name = 'RefusedError';
    this.refusal = refusal;
  }
}

// client -> Map(eventId -> the XADD's time in ms), the latest REMEMBERED_SENDS ids.
const sends = new WeakMap();

function recordSend(client, eventId, entryId) {
  const at = Number(String(entryId).split('-', 1)[0]);
  if (!Number.isFinite(at) || client === null || typeof client !== 'object') return;
  let sent = sends.get(client);
  if (sent === undefined) sends.set(client, (sent = new Map()));
  sent.delete(eventId); // re-inserted last: the Map's order is the eviction order
  sent.set(eventId, at);
  if (sent.size > REMEMBERED_SENDS) sent.delete(sent.keys().next().value);
}

/** The answer, unless it is a refusal of an earlier send of this client (then null). */
function current(client, eventId, answer) {
  if (answer?.kind !== 'refusal') return answer;
  const sent = sends.get(client)?.get(eventId);
  const refusedAt = Date.parse(answer.refused_at);
  if (sent !== undefined && Number.isFinite(refusedAt) && refusedAt < sent - STALE_REFUSAL_MARGIN_MS) return null;
  return answer;
}

function settled(answer, untilFinal) {
  if (answer === null) return false;
  return answer.kind === 'refusal' || answer.final || !untilFinal;
}

function result(answer, untilFinal) {
  if (answer?.kind === 'refusal') throw new RefusedError(answer);
  if (answer === null || (untilFinal && !answer.final)) return null;
  return answer;
}

/** A fresh event id. Store it with the application before submitting: a resend with the
 * same id is recognised and decided once. */
export function newEventId() {
  return `evt-${randomUUID()}`;
}

/** The key, and the Pub/Sub channel, of one event's decision. */
/** The id the service decides an app's signup under: `<app>:<eventId>` (no app can use
 * another app's ids); without an app, the event id itself. */
export function serviceEventId(app, eventId) {
  return app ? `${app}:${eventId}` : eventId;
}

/** An app's own intake stream (its per-app Redis user may append only there). */
export function intakeStream(signupsStream, app) {
  return `${signupsStream}:app:${app}`;
}

/** An app's own decision stream: the decisions of its signups (its per-app Redis user may
 * read it only through its own consumer groups). */
export function appFeedStream(decisionsStream, app) {
  return `${decisionsStream}:app:${app}`;
}

/** An app's own refusals stream: the refusals of its refused signups (refusal.v1.json), read
 * like the decision feed. */
export function appRefusalsStream(decisionsStream, app) {
  return `${decisionsStream}:app:${app}:refusals`;
}

const APP_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;

function checkApp(app, eventId) {
  if (app == null) return;
  if (typeof app !== 'string' || !APP_NAME.test(app)) throw new ContractError(`app ${JSON.stringify(app)} must match ${APP_NAME.source}`);
  if (eventId !== undefined && serviceEventId(app, eventId).length > 128) {
    throw new ContractError(`eventId: at most ${127 - app.length} characters for app ${app} (the service adds ${app}:)`);
  }
}

export function decisionKey(decisionsStream, eventId) {
  return `${decisionsStream}:event:${eventId}`;
}

/** The signup event as the stream carries it. Checks what can be checked without the
 * schema; the service validates the rest and dead-letters a bad event with a reason. */
export function signupPayload(application, { userId, eventId, occurredAt = new Date() }) {
  if (typeof eventId !== 'string' || !EVENT_ID.test(eventId)) {
    throw new ContractError(`event_id ${JSON.stringify(eventId)}: 1-128 characters of letters, digits and . _ : ~ + -`);
  }
  if (typeof userId !== 'string' || userId.length < 1 || userId.length > 128) {
    throw new ContractError('user_id: a string of 1-128 characters');
  }
  if (application === null || typeof application !== 'object' || Array.isArray(application)) {
    throw new ContractError('application: a JSON object (see signup.v1.json)');
  }
  return JSON.stringify({
    schema_version: SCHEMA_VERSION,
    event_id: eventId,
    user_id: userId,
    occurred_at: occurredAt.toISOString(), // UTC, milliseconds, "Z"
    application,
  });
}

/** Publish a signup; resolves to its event id (a fresh `evt-<uuid>` unless given). */
export async function submitSignup(client, application, { userId, eventId, occurredAt, signupsStream = 'signups', app } = {}) {
  const id = eventId ?? newEventId();
  checkApp(app, id);
  const entryId = await client.xAdd(app ? intakeStream(signupsStream, app) : signupsStream, '*', {
    payload: signupPayload(application, { userId, eventId: id, occurredAt }),
  });
  recordSend(client, serviceEventId(app, id), entryId);
  return id;
}

/** What the per-event key or channel holds, as an object: a decision (see parseDecision)
 * or a refusal (`kind: "refusal"`). Throws ContractError for anything else. */
export function parseAnswer(text) {
  let answer;
  try {
    answer = JSON.parse(text);
  } catch (err) {
    throw new ContractError(`an answer that is not JSON: ${err.message}`);
  }
  if (answer !== null && typeof answer === 'object' && answer.kind === 'refusal') {
    if (answer.schema_version !== SCHEMA_VERSION) {
      throw new ContractError(`refusal schema_version ${JSON.stringify(answer.schema_version)}: this client reads ${SCHEMA_VERSION}`);
    }
    for (const name of ['event_id', 'reason', 'message', 'refused_at']) {
      if (typeof answer[name] !== 'string') throw new ContractError(`refusal without ${name}`);
    }
    answer.retryable = answer.retryable === true;
    return answer;
  }
  return checkDecision(answer);
}

/** A decision's JSON text as an object; refuses another schema version, and throws
 * RefusedError for a refusal. Unknown properties are kept (version 1 may gain optional
 * ones). `final` is always set: absent in a decision published before it existed, it
 * reads as `decision !== "review"`; `review` is null unless a reviewer decided. */
export function parseDecision(text) {
  const answer = parseAnswer(text);
  if (answer.kind === 'refusal') throw new RefusedError(answer);
  return answer;
}

function checkDecision(decision) {
  if (decision === null || typeof decision !== 'object' || decision.schema_version !== SCHEMA_VERSION) {
    const version = decision?.schema_version;
    throw new ContractError(`decision schema_version ${JSON.stringify(version)}: this client reads ${SCHEMA_VERSION}`);
  }
  if (!OUTCOMES.includes(decision.decision)) {
    throw new ContractError(`decision ${JSON.stringify(decision.decision)} is none of ${OUTCOMES.join(', ')}`);
  }
  if (typeof decision.final !== 'boolean') decision.final = decision.decision !== 'review';
  if (decision.review === undefined) decision.review = null;
  return decision;
}

// `eventId`: the service's id (serviceEventId).
async function readAnswer(client, eventId, decisionsStream) {
  const value = await client.get(decisionKey(decisionsStream, eventId));
  return value === null ? null : current(client, eventId, parseAnswer(value));
}

/** The decision if it is out (one GET), else null; throws RefusedError if the signup was
 * refused. A `review` is returned as it is (`final: false`) until a reviewer decides. */
export async function getDecision(client, eventId, { decisionsStream = 'decisions', app } = {}) {
  checkApp(app);
  return result(await readAnswer(client, serviceEventId(app, eventId), decisionsStream), false);
}

/** Wait up to `timeoutMs` for one event's decision; resolves to it, or to null on timeout;
 * rejects with RefusedError if the signup was refused. With `untilFinal`, a provisional
 * `review` does not end the wait: the reviewer's final decision does (null if it is not out
 * in time). A subscribed connection cannot run GET, so the channel is listened to on a
 * duplicate of `client`, closed before this returns. */
export async function waitForDecision(client, appEventId, timeoutMs, { decisionsStream = 'decisions', untilFinal = false, app } = {}) {
  checkApp(app);
  const eventId = serviceEventId(app, appEventId);
  const deadline = Date.now() + timeoutMs;
  const channel = decisionKey(decisionsStream, eventId);
  const subscriber = client.duplicate();
  const messages = [];
  let wake = () => {};
  let fail;
  const failed = new Promise((_resolve, reject) => {
    fail = reject;
  });
  failed.catch(() => {}); // observed below; never an unhandled rejection
  subscriber.on('error', fail);
  let timer;
  try {
    await subscriber.connect();
    await subscriber.subscribe(channel, (message) => {
      messages.push(message);
      wake();
    });
    // Subscribed first: from here on nothing published can be missed by both reads.
    let found = await readAnswer(client, eventId, decisionsStream);
    while (!settled(found, untilFinal)) {
      if (messages.length > 0) {
        found = current(client, eventId, parseAnswer(messages.shift())) ?? found;
        continue;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        // A message lost to a reconnect still left the key.
        found = await readAnswer(client, eventId, decisionsStream);
        break;
      }
      await Promise.race([
        failed,
        new Promise((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, remaining);
        }),
      ]);
      clearTimeout(timer);
      wake = () => {};
    }
    return result(found, untilFinal);
  } finally {
    clearTimeout(timer);
    subscriber.off('error', fail);
    subscriber.on('error', () => {}); // errors while closing say nothing about the decision
    try {
      if (subscriber.isOpen) await subscriber.close();
      else subscriber.destroy();
    } catch {
      // already closed
    }
  }
}

/** `waitForDecision(client, eventId, timeoutMs, { ...options, untilFinal: true })`. */
export function waitForFinalDecision(client, eventId, timeoutMs, options = {}) {
  return waitForDecision(client, eventId, timeoutMs, { ...options, untilFinal: true });
}

// node-redis RESP_TYPES.MAP ('%'). Mapped to Array for XREADGROUP, an entry's fields stay
// the flat [name, value, ...] list Redis sends, and the entry of one trimmed while pending
// (no fields: nil) reads as null; with the default mapping node-redis 6.3 throws a TypeError
// on that nil and the whole reply is lost. The outer reply is [{ name, messages }] for RESP2
// and RESP3 alike.
const RESP_MAP = 37;

async function createGroup(client, stream, group, start) {
  try {
    await client.xGroupCreate(stream, group, start, { MKSTREAM: true });
  } catch (err) {
    if (!String(err?.message).includes('BUSYGROUP')) throw err;
  }
}

function checkName(what, value) {
  if (typeof value !== 'string' || value.length === 0) throw new ContractError(`${what}: a non-empty string`);
}

function payloadOf(stream, entryId, fields) {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (String(fields[i]) === 'payload') return String(fields[i + 1]);
  }
  throw new ContractError(`${stream} entry ${entryId} has no payload`);
}

/** The app's own decision feed through its consumer group `group`, as consumer `consumer`
 * (one name per instance): every decision of its signups appended after the group was
 * created (`start`: '$' new ones, '0' all the stream holds), a review and later its final
 * decision; with `refusals: true` also every refusal of its signups, from its refusals
 * stream (a group of the same name there). First this consumer's own pending entries (given
 * to it before, not acknowledged), then new ones. Yields `{ entryId, stream, decision }` or
 * `{ entryId, stream, refusal }`, each with `ack()`: acknowledge once handled, or it is
 * delivered again to this consumer when a feed starts. The groups are created (if missing)
 * at the first read. Reads block on a duplicate of `client` (closed when the feed ends),
 * so `client` stays free for other commands; acknowledgements go through `client`. Runs
 * until the loop stops or `signal` aborts (which also ends a read blocked at that moment;
 * what it would have delivered stays pending for this consumer). An entry trimmed while
 * pending is acknowledged and skipped; a payload this module cannot read throws
 * ContractError (the entry stays pending). Throws ContractError at once without `app`,
 * `group` or `consumer`. */
export function feed(client, { app, group, consumer, start = '$', blockMs = 5000, count = 100, decisionsStream = 'decisions', refusals = false, signal } = {}) {
  if (app == null) throw new ContractError('feed needs app: the feed is an app\'s own stream <decisions>:app:<app>');
  checkApp(app);
  checkName('group', group);
  checkName('consumer', consumer);
  const feedStream = appFeedStream(decisionsStream, app);
  const refusalsStream = appRefusalsStream(decisionsStream, app);
  const streams = refusals ? [feedStream, refusalsStream] : [feedStream];
  return readFeed(client, { streams, refusalsStream, group, consumer, start, blockMs, count, signal });
}

async function* readFeed(client, { streams, refusalsStream, group, consumer, start, blockMs, count, signal }) {
  if (signal?.aborted) return;
  for (const stream of streams) await createGroup(client, stream, group, start);
  const connection = client.duplicate();
  connection.on('error', () => {}); // a lost connection rejects the command in flight, thrown below
  const interrupt = () => {
    try {
      connection.destroy(); // rejects a read blocked at this moment
    } catch {
      // not open yet, or already closed
    }
  };
  signal?.addEventListener('abort', interrupt, { once: true });
  try {
    const cursors = new Map(streams.map((stream) => [stream, '0'])); // own pending entries first
    let reader;
    while (!signal?.aborted) {
      const pending = streams.filter((stream) => cursors.get(stream) !== '>');
      const reading = pending.length > 0 ? pending : streams;
      let reply;
      try {
        if (reader === undefined) {
          await connection.connect();
          reader = connection.withTypeMapping({ [RESP_MAP]: Array });
        }
        reply = await reader.xReadGroup(
          group,
          consumer,
          reading.map((stream) => ({ key: stream, id: cursors.get(stream) })),
          pending.length > 0 ? { COUNT: count } : { COUNT: count, BLOCK: blockMs },
        );
      } catch (err) {
        if (signal?.aborted) return; // interrupted by the abort
        throw err;
      }
      const entries = [];
      for (const { name, messages } of reply ?? []) {
        // A reply's stream name carries the client's keyPrefix, if any; an app name has no
        // ':', so only the refusals stream's name ends with its key.
        const stream = String(name).endsWith(refusalsStream) ? refusalsStream : streams[0];
        for (const { id, message } of messages) entries.push({ stream, entryId: String(id), fields: message });
      }
      for (const stream of pending) {
        // Past this stream's last pending entry, or on to new ones once none is left.
        const last = entries.findLast((entry) => entry.stream === stream);
        cursors.set(stream, last ? last.entryId : '>');
      }
      for (const { stream, entryId, fields } of entries) {
        if (signal?.aborted) return; // the rest stays pending for this consumer
        if (!fields || fields.length === 0) {
          await client.xAck(stream, group, entryId); // trimmed while pending: nothing left to read
          continue;
        }
        yield feedItem(client, group, stream, refusalsStream, entryId, payloadOf(stream, entryId, fields));
      }
    }
  } finally {
    signal?.removeEventListener('abort', interrupt);
    if (connection.isOpen) {
      try {
        await connection.close();
      } catch {
        interrupt();
      }
    } else {
      interrupt();
    }
  }
}

function feedItem(client, group, stream, refusalsStream, entryId, payload) {
  const ack = async () => {
    await client.xAck(stream, group, entryId);
  };
  const answer = parseAnswer(payload);
  const isRefusal = answer.kind === 'refusal';
  if (isRefusal !== (stream === refusalsStream)) {
    throw new ContractError(`${stream} entry ${entryId}: a ${isRefusal ? 'refusal' : 'decision'} on the ${isRefusal ? 'decision' : 'refusals'} stream`);
  }
  return isRefusal ? { entryId, stream, refusal: answer, ack } : { entryId, stream, decision: answer, ack };
}
