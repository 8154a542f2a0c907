// Types of onboarding.mjs (hand-written; the module is plain JavaScript).
// The contracts are the service's JSON Schemas: signup.v1.json (what submitSignup sends),
// decision.v1.json (what getDecision and waitForDecision resolve to) and refusal.v1.json
// (what RefusedError carries).

/** The schema version of the signups this module writes and the decisions it reads. */
export const SCHEMA_VERSION: 1;

export type Outcome = 'approve' | 'review' | 'decline';

export const OUTCOMES: readonly Outcome[];

export interface ReasonCode {
  code: string;
  text: string;
  contribution?: number | null;
  [property: string]: unknown;
}

/** The case a reviewer's final decision closed (decision.v1.json `review`). */
export interface ReviewInfo {
  case_id: string;
  reviewer_id: string;
  reason: string;
  decided_at: string;
  opened_at?: string;
  [property: string]: unknown;
}

/** One decision (decision.v1.json). Properties a later 1.x schema adds are kept. */
export interface Decision {
  schema_version: 1;
  event_id: string;
  user_id: string;
  decision: Outcome;
  score: number | null;
  reason_codes: ReasonCode[];
  model_version: string | null;
  run_id: string | null;
  error: string | null;
  timestamps: Record<string, string>;
  /** false on a provisional `review` (a final decision follows), true otherwise; set by
   * parseDecision when a decision published before the property existed lacks it. */
  final: boolean;
  /** Set on a reviewer's final decision, null otherwise. */
  review: ReviewInfo | null;
  [property: string]: unknown;
}

/** The answer to a refused signup (refusal.v1.json): it was dead-lettered, never assessed. */
export interface Refusal {
  kind: 'refusal';
  schema_version: 1;
  event_id: string;
  user_id?: string | null;
  /** Stable reason code: missing_field, invalid_value, ..., max_deliveries, internal_error. */
  reason: string;
  /** For a person: the field and the rule it breaks. */
  message: string;
  /** true: the service's side failed, a decision follows its replay; false: fix and resend. */
  retryable: boolean;
  refused_at: string;
  [property: string]: unknown;
}

/** What the per-event key or channel holds. */
export type Answer = Decision | Refusal;

export interface WaitOptions {
  decisionsStream?: string;
  /** The app's name when `client` is its own `app-<name>` user: the answer is read under
   * the service's id `<app>:<eventId>` (docs/integration.md). */
  app?: string;
  /** A provisional `review` does not end the wait; the reviewer's final decision does. */
  untilFinal?: boolean;
}

/** The application of a signup (the 18 fields of signup.v1.json); the service validates it. */
export type Application = Record<string, unknown>;

/** What this module needs of a node-redis (>= 6) client: `createClient({ url })`, connected. */
export interface OnboardingRedisClient {
  xAdd(key: string, id: string, message: { payload: string }): Promise<unknown>;
  get(key: string): Promise<unknown>;
  duplicate(): OnboardingSubscriber;
}

/** The duplicate of the client that `waitForDecision` subscribes on, and closes. */
export interface OnboardingSubscriber {
  readonly isOpen: boolean;
  connect(): Promise<unknown>;
  subscribe(channel: string, listener: (message: string) => void): Promise<unknown>;
  on(event: 'error', listener: (err: Error) => void): unknown;
  off(event: 'error', listener: (err: Error) => void): unknown;
  close(): Promise<unknown>;
  destroy(): unknown;
}

/** How much older than this client's latest send of the same event id a refusal must be
 * to be taken for the answer to an earlier send (and ignored). */
export const STALE_REFUSAL_MARGIN_MS: number;

/** A signup the service would refuse, or an answer this module cannot read. */
export class ContractError extends Error {
  constructor(message: string);
  name: 'ContractError';
}

/** The service refused the signup: an outcome, not a bug in the app. */
export class RefusedError extends Error {
  constructor(refusal: Refusal);
  name: 'RefusedError';
  readonly refusal: Refusal;
}

/** A fresh event id (`evt-<uuid>`). Store it with the application before submitting. */
export function newEventId(): string;

/** The id the service decides an app's signup under: `<app>:<eventId>` (the event id itself without an app). */
export function serviceEventId(app: string | undefined | null, eventId: string): string;

/** An app's own intake stream, `<signupsStream>:app:<app>`. */
export function intakeStream(signupsStream: string, app: string): string;

/** An app's own decision stream, `<decisionsStream>:app:<app>` (what `feed` reads). */
export function appFeedStream(decisionsStream: string, app: string): string;

/** An app's own refusals stream, `<decisionsStream>:app:<app>:refusals` (`feed` with `refusals: true`). */
export function appRefusalsStream(decisionsStream: string, app: string): string;

/** The key, and the Pub/Sub channel, of one event's decision. */
export function decisionKey(decisionsStream: string, eventId: string): string;

/** The signup event's JSON text as the stream carries it; throws ContractError. */
export function signupPayload(
  application: Application,
  options: { userId: string; eventId: string; occurredAt?: Date },
): string;

/** Publish a signup; resolves to its event id (a fresh one unless given). */
export function submitSignup(
  client: OnboardingRedisClient,
  application: Application,
  options: { userId: string; eventId?: string; occurredAt?: Date; signupsStream?: string; app?: string },
): Promise<string>;

/** The key's or channel's JSON text: a decision or a refusal; throws ContractError. */
export function parseAnswer(text: string): Answer;

/** A decision's JSON text as an object; throws ContractError on another schema version,
 * RefusedError for a refusal. */
export function parseDecision(text: string): Decision;

/** The decision if it is out (one GET), else null; throws RefusedError for a refusal. */
export function getDecision(
  client: OnboardingRedisClient,
  eventId: string,
  options?: { decisionsStream?: string; app?: string },
): Promise<Decision | null>;

/** Wait up to `timeoutMs` for one event's decision; resolves to it, or to null on timeout;
 * rejects with RefusedError for a refusal. */
export function waitForDecision(
  client: OnboardingRedisClient,
  eventId: string,
  timeoutMs: number,
  options?: WaitOptions,
): Promise<Decision | null>;

/** waitForDecision with `untilFinal: true`: approve or decline, by the model or a reviewer. */
export function waitForFinalDecision(
  client: OnboardingRedisClient,
  eventId: string,
  timeoutMs: number,
  options?: { decisionsStream?: string; app?: string },
): Promise<Decision | null>;

/** What `feed` needs of a node-redis (>= 6) client: `createClient({ url })`, connected,
 * whose user may XGROUP CREATE, XREADGROUP and XACK on the app's feed streams. */
export interface OnboardingFeedClient {
  xGroupCreate(key: string, group: string, id: string, options: { MKSTREAM: true }): Promise<unknown>;
  xAck(key: string, group: string, id: string): Promise<unknown>;
  duplicate(): OnboardingFeedConnection;
}

/** The duplicate of the client that `feed` blocks its reads on, and closes. */
export interface OnboardingFeedConnection {
  readonly isOpen: boolean;
  connect(): Promise<unknown>;
  withTypeMapping(typeMapping: { [type: number]: unknown }): {
    xReadGroup(
      group: string,
      consumer: string,
      streams: Array<{ key: string; id: string }>,
      options: { COUNT: number; BLOCK?: number },
    ): Promise<unknown>;
  };
  on(event: 'error', listener: (err: Error) => void): unknown;
  close(): Promise<unknown>;
  destroy(): unknown;
}

export interface FeedOptions {
  /** The app's name (required): the feed is its own stream `<decisionsStream>:app:<app>`. */
  app: string;
  /** The app's consumer group (one per app; created at `start` if missing). */
  group: string;
  /** This instance's name within the group: its unacknowledged entries come back to it. */
  consumer: string;
  /** Where a group created now starts: '$' (default) new entries only, '0' all the stream holds. */
  start?: string;
  /** How long one read blocks for new entries, in ms (default 5000). */
  blockMs?: number;
  /** At most this many entries per stream per read (default 100). */
  count?: number;
  decisionsStream?: string;
  /** Also read the app's refusals stream `<decisionsStream>:app:<app>:refusals` (default false). */
  refusals?: boolean;
  /** Ends the feed: checked between reads, and interrupts a read blocked at that moment. */
  signal?: AbortSignal;
}

/** An entry of a feed: acknowledge it (`ack()`) once handled, or it is delivered again to
 * this consumer when a feed starts. */
export interface FeedEntry {
  /** The stream entry's id. */
  entryId: string;
  /** The stream it was read from (the app's feed, or its refusals stream). */
  stream: string;
  /** XACK on its own stream. */
  ack(): Promise<void>;
}

/** A decision from the app's decision feed (a review, later its final decision). */
export interface FeedDecision extends FeedEntry {
  decision: Decision;
  refusal?: undefined;
}

/** A refusal from the app's refusals stream (`refusals: true` only). */
export interface FeedRefusal extends FeedEntry {
  refusal: Refusal;
  decision?: undefined;
}

export type FeedItem = FeedDecision | FeedRefusal;

/** The app's own decision feed through its consumer group: this consumer's pending entries
 * first, then new ones, until the loop stops or `signal` aborts; with `refusals: true` its
 * refusals too. Throws ContractError at once without `app`, `group` or `consumer`. */
export function feed(
  client: OnboardingFeedClient,
  options: FeedOptions & { refusals: true },
): AsyncGenerator<FeedItem, void, undefined>;
export function feed(
  client: OnboardingFeedClient,
  options: FeedOptions & { refusals?: false },
): AsyncGenerator<FeedDecision, void, undefined>;
export function feed(client: OnboardingFeedClient, options: FeedOptions): AsyncGenerator<FeedItem, void, undefined>;
