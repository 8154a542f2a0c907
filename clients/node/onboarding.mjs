// The onboarding decision service's Redis contract for a Node.js app (docs/integration.md):
//
//   submit:  XADD <signups> * payload <signup JSON>            (onboarding/schemas/signup.v1.json)
//   wait:    SUBSCRIBE <decisions>:event:<id>, then GET the key of the same name
//            (a decision published before is found by GET, one published after arrives
//            on the channel); after the timeout GET once more  (decision.v1.json)
//
// `client` is a connected node-redis client (`createClient({ url })`) whose user has the
// service's `app` ACL role. Nothing here scans a stream.

import { randomUUID } from 'node:crypto';

export const SCHEMA_VERSION = 1;
export const OUTCOMES = Object.freeze(['approve', 'review', 'decline']);
const EVENT_ID = /^[A-Za-z0-9][A-Za-z0-9._:~+-]{0,127}$/;

/** A signup the service would refuse, or a decision this module cannot read. */
export class ContractError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ContractError';
  }
}

/** A fresh event id. Store it with the application before submitting: a resend with the
 * same id is recognised and decided once. */
export function newEventId() {
  return `evt-${randomUUID()}`;
}

/** The key, and the Pub/Sub channel, of one event's decision. */
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
export async function submitSignup(client, application, { userId, eventId, occurredAt, signupsStream = 'signups' } = {}) {
  const id = eventId ?? newEventId();
  await client.xAdd(signupsStream, '*', { payload: signupPayload(application, { userId, eventId: id, occurredAt }) });
  return id;
}

/** A decision's JSON text as an object; refuses another schema version. Unknown
 * properties are kept (version 1 may gain optional ones). */
export function parseDecision(text) {
  let decision;
  try {
    decision = JSON.parse(text);
  } catch (err) {
    throw new ContractError(`a decision that is not JSON: ${err.message}`);
  }
  if (decision === null || typeof decision !== 'object' || decision.schema_version !== SCHEMA_VERSION) {
    const version = decision?.schema_version;
    throw new ContractError(`decision schema_version ${JSON.stringify(version)}: this client reads ${SCHEMA_VERSION}`);
  }
  if (!OUTCOMES.includes(decision.decision)) {
    throw new ContractError(`decision ${JSON.stringify(decision.decision)} is none of ${OUTCOMES.join(', ')}`);
  }
  return decision;
}

/** The decision if it is out (one GET), else null. */
export async function getDecision(client, eventId, { decisionsStream = 'decisions' } = {}) {
  const value = await client.get(decisionKey(decisionsStream, eventId));
  return value === null ? null : parseDecision(value);
}

/** Wait up to `timeoutMs` for one event's decision; resolves to it, or to null on timeout.
 * A subscribed connection cannot run GET, so the channel is listened to on a duplicate of
 * `client`, closed before this returns. */
export async function waitForDecision(client, eventId, timeoutMs, { decisionsStream = 'decisions' } = {}) {
  const deadline = Date.now() + timeoutMs;
  const channel = decisionKey(decisionsStream, eventId);
  const subscriber = client.duplicate();
  let announce;
  let fail;
  const announced = new Promise((resolve, reject) => {
    announce = resolve;
    fail = reject;
  });
  announced.catch(() => {}); // observed below; never an unhandled rejection
  subscriber.on('error', fail);
  let timer;
  try {
    await subscriber.connect();
    await subscriber.subscribe(channel, (message) => announce(message));
    // Subscribed first: from here on nothing published can be missed by both reads.
    const held = await client.get(channel);
    if (held !== null) return parseDecision(held);
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), Math.max(0, deadline - Date.now()));
    });
    const message = await Promise.race([announced, timedOut]);
    if (message !== null) return parseDecision(message);
    // A message lost to a reconnect still left the key.
    return await getDecision(client, eventId, { decisionsStream });
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
