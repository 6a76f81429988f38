/*!
 * mlsockets.js: the browser client for mlsockets. No build step, no dependencies.
 *
 * Speaks the envelope wire of docs/design-app.md on the "mlsockets.json.v1" subprotocol:
 *
 *   client -> server  {"event": "chat.send", "data": {...}, "id": 7}       id: ack wanted
 *   server -> client  {"reply": 7, "data": {...}}                          the handler's return
 *                     {"reply": 7, "error": {"code", "message", "fields"}}
 *                     {"event": "chat.message", "channel": "room:lobby", "data": {...}}
 *
 * Usage (classic script; the Flask extension serves this file at <path>/mlsockets.js):
 *
 *   <script src="/ws/mlsockets.js"></script>
 *   <script>
 *     const sock = new MLSockets.Client();          // connects to /ws, where the script came from
 *     sock.on("state", (state) => console.log(state));
 *     const room = await sock.subscribe("room:lobby", {onMessage: (event, data) => ...});
 *     const saved = await sock.request("chat.send", {text: "hi"});
 *   </script>
 *
 * As an ES module: `import "/ws/mlsockets.js"; const {Client} = globalThis.MLSockets;`.
 * Under CommonJS (tests, bundlers): `const MLSockets = require("./mlsockets.js")`.
 *
 * Guide: docs/browser-client.md. Licence: MIT.
 */
(function (root, factory) {
  "use strict";
  const api = factory(root);
  if (typeof module === "object" && module !== null && module.exports) {
    module.exports = api;
  }
  if (root) {
    root.MLSockets = api;
  }
})(typeof globalThis !== "undefined" ? globalThis : this, function (root) {
  "use strict";

  const VERSION = "1";

  /** Subprotocol per format. A browser has no msgpack codec built in: JSON only. */
  const SUBPROTOCOLS = Object.freeze({ json: "mlsockets.json.v1" });

  /**
   * Close codes after which reconnecting would only repeat the failure (RFC 6455 section
   * 7.4.1): protocol error, unsupported data, invalid data, policy violation (the server
   * refused us: rate limited, access revoked, slow consumer), missing extension. Same list
   * as the Python client's FATAL_CLOSE_CODES.
   */
  const FATAL_CLOSE_CODES = Object.freeze([1002, 1003, 1007, 1008, 1010]);

  /** The header that tells the server which connection made an HTTP request. */
  const SOCKET_ID_HEADER = "X-Socket-ID";

  const MAX_EVENT_LENGTH = 128;
  const MAX_ID = Number.MAX_SAFE_INTEGER; // 2**53 - 1, the wire's largest id
  const SCRIPT_NAME = "/mlsockets.js";

  /** The connection states, in the order a connection usually goes through them. */
  const STATES = Object.freeze(["connecting", "open", "reconnecting", "closed"]);

  /** Local events; every other name passed to Client.on() is a server event. */
  const LOCAL_EVENTS = Object.freeze(["state", "welcome"]);

  const DEFAULTS = Object.freeze({
    url: null,
    format: "json",
    token: null,
    reconnect: true,
    backoff: Object.freeze({ initial: 500, max: 30000, factor: 2, maxAttempts: Infinity }),
    timeout: 10000,
    connectTimeout: 10000,
    pingTimeout: null,
    queue: 100,
    debug: false,
  });

  // -- errors ----------------------------------------------------------------------------

  /** The base of every error this client produces. */
  class MLSocketsError extends Error {
    constructor(message) {
      super(message);
      this.name = new.target.name;
    }
  }

  /**
   * The server answered a request with an error envelope.
   *
   * @property {string} code e.g. "invalid", "unknown_event", "forbidden" (docs/design-app.md).
   * @property {?Object} fields per-field messages for "invalid" (marshmallow's), else null.
   */
  class ErrorReply extends MLSocketsError {
    /**
     * @param {string} code
     * @param {string} message
     * @param {?Object} [fields]
     */
    constructor(code, message, fields) {
      super(message || code);
      this.code = code;
      this.fields = fields || null;
    }
  }

  /** No reply came within the timeout; the server may still handle the request. */
  class TimeoutError extends MLSocketsError {}

  /**
   * The connection closed before the reply (the server may or may not have handled the
   * request), or the client is closed for good.
   *
   * @property {?number} code the WebSocket close code, when one is known.
   * @property {string} reason
   */
  class ClosedError extends MLSocketsError {
    constructor(message, code, reason) {
      super(message);
      this.code = code === undefined ? null : code;
      this.reason = reason || "";
    }
  }

  /** The client is not open and its queue of outgoing messages is full (option `queue`). */
  class QueueFullError extends MLSocketsError {}

  // -- helpers ---------------------------------------------------------------------------

  /** Report an exception thrown by a listener without breaking the dispatch loop. */
  function report(error) {
    if (typeof root.reportError === "function") {
      root.reportError(error);
    } else if (typeof console !== "undefined") {
      console.error(error);
    }
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function checkEvent(event) {
    if (typeof event !== "string" || event.length === 0 || event.length > MAX_EVENT_LENGTH) {
      throw new TypeError(`an event name is a string of 1 to ${MAX_EVENT_LENGTH} characters`);
    }
  }

  function encode(envelope) {
    // JSON.stringify throws a TypeError for cycles and BigInt: the caller's bug, surfaced now.
    return JSON.stringify(envelope);
  }

  /** The page's location, or null outside a browser. */
  function pageLocation() {
    return root.location && root.location.href ? root.location : null;
  }

  /**
   * Resolve a WebSocket URL: absolute ws(s):// URLs as they are; http(s):// and relative ones
   * ("/ws") against the page, with the scheme mapped (https -> wss).
   */
  function resolveUrl(url) {
    const base = pageLocation();
    const resolved = base ? new URL(url, base.href) : new URL(url);
    if (resolved.protocol === "http:") resolved.protocol = "ws:";
    else if (resolved.protocol === "https:") resolved.protocol = "wss:";
    if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
      throw new TypeError(`not a WebSocket URL: ${url}`);
    }
    resolved.hash = "";
    return resolved;
  }

  /**
   * The endpoint this script was served from: a script loaded from "/ws/mlsockets.js" means
   * the endpoint "/ws" on the same host. Known only for a classic <script> (not a module).
   */
  function scriptEndpoint() {
    const script = root.document && root.document.currentScript;
    if (!script || !script.src) return null;
    const url = new URL(script.src);
    if (!url.pathname.endsWith(SCRIPT_NAME)) return null;
    url.pathname = url.pathname.slice(0, -SCRIPT_NAME.length) || "/";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  const DEFAULT_URL = scriptEndpoint();

  /** Whether a fetch() target is on the page's own origin (relative URLs are). */
  function sameOrigin(input) {
    const base = pageLocation();
    if (!base) return false;
    const href = input !== null && typeof input === "object" && "url" in input ? input.url : input;
    try {
      return new URL(href, base.href).origin === base.origin;
    } catch (err) {
      return false;
    }
  }

  /**
   * fetch() with the X-Socket-ID header, so the server can leave this connection out of the
   * broadcast the request causes (`broadcaster.emit(..., skip_sender=True)`). The header is
   * added only for same-origin requests and only while a connection id is known.
   */
  function fetchWithSocketId(socketId, input, init) {
    const options = Object.assign({}, init || {});
    if (socketId && sameOrigin(input)) {
      const fromRequest = typeof Request !== "undefined" && input instanceof Request;
      const headers = new Headers(options.headers || (fromRequest ? input.headers : undefined));
      headers.set(SOCKET_ID_HEADER, socketId);
      options.headers = headers;
    }
    return root.fetch(input, options);
  }

  /** A listener table: event name -> array of functions (a function may appear twice). */
  class Listeners {
    constructor() {
      this._map = new Map();
    }

    add(event, fn) {
      if (typeof fn !== "function") throw new TypeError("a listener must be a function");
      const list = this._map.get(event);
      if (list) list.push(fn);
      else this._map.set(event, [fn]);
      return () => this.remove(event, fn);
    }

    remove(event, fn) {
      const list = this._map.get(event);
      if (!list) return;
      if (fn === undefined) {
        this._map.delete(event);
        return;
      }
      const index = list.indexOf(fn);
      if (index >= 0) list.splice(index, 1);
      if (list.length === 0) this._map.delete(event);
    }

    has(event) {
      return this._map.has(event);
    }

    /** Call every listener of `event` (a copy of the list: listeners may unregister). */
    fire(event, args) {
      const list = this._map.get(event);
      if (!list) return;
      for (const fn of list.slice()) {
        try {
          fn.apply(undefined, args);
        } catch (err) {
          report(err);
        }
      }
    }
  }

  // -- subscriptions ---------------------------------------------------------------------

  /**
   * One channel this client is subscribed to. Created by {@link Client#subscribe}; stays
   * subscribed across reconnections until {@link Subscription#unsubscribe}.
   *
   * @property {string} channel
   * @property {boolean} presence whether it is a presence channel ("presence-...").
   * @property {?Array<{user_id: string, info: Object}>} members the present users (presence
   *     channels only, else null), kept up to date by mls.presence / mls.joined / mls.left.
   * @property {boolean} subscribed whether the server confirmed it on the current connection.
   */
  class Subscription {
    constructor(client, channel) {
      this.client = client;
      this.channel = channel;
      this.presence = channel.startsWith("presence-");
      this.members = this.presence ? [] : null;
      this.subscribed = false;
      this.active = true; // false once unsubscribed or refused
      this._listeners = new Listeners();
      this._settled = false;
      /** Resolves with this subscription once the server confirmed it (see subscribe()). */
      this.ready = new Promise((resolve, reject) => {
        this._resolve = resolve;
        this._reject = reject;
      });
    }

    /**
     * Listen to one event of this channel: `fn(data, envelope)`.
     * @returns {function(): void} a function that removes the listener.
     */
    on(event, fn) {
      return this._listeners.add(event, fn);
    }

    /** Remove a listener added with {@link Subscription#on} (all of `event`'s without fn). */
    off(event, fn) {
      this._listeners.remove(event, fn);
    }

    /**
     * Leave the channel. The handlers stop at once; the channel is not subscribed again
     * after a reconnection.
     * @returns {Promise<?Object>} the server's ack data (null when not connected).
     */
    unsubscribe() {
      return this.client._unsubscribe(this);
    }

    /** Add the handlers of one subscribe() call: onMessage, onPresence, onJoin, onLeave. */
    _addHandlers(handlers) {
      if (!handlers) return;
      const names = {
        onMessage: "*",
        onPresence: "mls.presence",
        onJoin: "mls.joined",
        onLeave: "mls.left",
        onError: "mls.error", // "mls." names never reach _message(): no clash with events
      };
      for (const key of Object.keys(names)) {
        if (handlers[key] !== undefined) this._listeners.add(names[key], handlers[key]);
      }
    }

    _confirmed(reply) {
      this.subscribed = true;
      if (this.presence && isObject(reply) && Array.isArray(reply.members)) {
        this.members = reply.members.slice();
      }
      if (!this._settled) {
        this._settled = true;
        this._resolve(this);
      }
    }

    _refused(error) {
      this.active = false;
      this.subscribed = false;
      if (!this._settled) {
        this._settled = true;
        this._reject(error);
      } else {
        this._listeners.fire("mls.error", [error, this]);
      }
    }

    _message(event, data, envelope) {
      this._listeners.fire("*", [event, data, envelope]);
      this._listeners.fire(event, [data, envelope]);
    }

    _presence(members) {
      this.members = members.slice();
      this._listeners.fire("mls.presence", [this.members, this]);
    }

    _joined(member) {
      const others = this.members.filter((m) => m.user_id !== member.user_id);
      this.members = others.concat([member]);
      this._listeners.fire("mls.joined", [member, this]);
    }

    _left(member) {
      this.members = this.members.filter((m) => m.user_id !== member.user_id);
      this._listeners.fire("mls.left", [member, this]);
    }
  }

  // -- the client ------------------------------------------------------------------------

  /**
   * A connection to an mlsockets endpoint that reconnects by itself.
   *
   * States: "connecting" (first connection) -> "open" (mls.welcome received) ->
   * "reconnecting" (dropped; waiting out the backoff or trying again) -> "open" ... and
   * "closed" for good: after {@link Client#close}, a fatal close code (1002, 1003, 1007,
   * 1008, 1010), `reconnect: false`, or when `backoff.maxAttempts` reconnection attempts
   * failed in a row.
   */
  class Client {
    /**
     * @param {string|Object} [options] the endpoint URL, or an options object:
     * @param {string} [options.url] ws(s)://, http(s):// or relative ("/ws") URL; default:
     *     the endpoint this script was served from (`<path>/mlsockets.js` -> `<path>`).
     * @param {string} [options.format="json"] only "json" in a browser.
     * @param {string|function(): (string|Promise<string>)} [options.token] sent as the
     *     `token` query parameter (mlsockets.tokens.TokenAuthenticator); a function is called
     *     before every connection attempt, so each one may use a fresh short-lived token.
     * @param {boolean} [options.reconnect=true] re-establish dropped connections.
     * @param {Object} [options.backoff] delays between attempts, in ms: `initial` (500),
     *     `max` (30000), `factor` (2), `maxAttempts` (Infinity: reconnection attempts that
     *     may fail in a row before the client gives up and closes). Each delay is drawn
     *     uniformly in [0, min(max, initial * factor**n)], n counting those failures.
     * @param {number} [options.timeout=10000] default request timeout in ms (null: none).
     * @param {number} [options.connectTimeout=10000] ms for an attempt to reach mls.welcome.
     * @param {?number} [options.pingTimeout] ms to wait for mls.pong (default: the heartbeat
     *     interval announced in mls.welcome).
     * @param {number} [options.queue=100] messages kept while not open, sent after the next
     *     mls.welcome; 0 rejects them at once.
     * @param {boolean} [options.debug=false] log state changes to the console.
     */
    constructor(options) {
      const given = typeof options === "string" ? { url: options } : Object.assign({}, options);
      const opts = Object.assign({}, DEFAULTS, given);
      opts.backoff = Object.assign({}, DEFAULTS.backoff, given.backoff || {});
      const b = opts.backoff;
      if (!(b.initial >= 0 && b.max >= b.initial && b.factor >= 1 && b.maxAttempts >= 1)) {
        throw new RangeError("backoff needs 0 <= initial <= max, factor >= 1, maxAttempts >= 1");
      }
      if (!Object.prototype.hasOwnProperty.call(SUBPROTOCOLS, opts.format)) {
        throw new TypeError(`unsupported format ${opts.format}: use "json"`);
      }
      const url = opts.url || DEFAULT_URL;
      if (!url) {
        throw new TypeError("no URL: pass one, or load mlsockets.js from <endpoint>/mlsockets.js");
      }
      this.options = opts;
      /** The endpoint, without the token. */
      this.url = resolveUrl(url).href;
      this.subprotocol = SUBPROTOCOLS[opts.format];
      /** This connection's id (from mls.welcome); null while not open. */
      this.id = null;
      /** The authenticated user's id (from mls.welcome); null when anonymous. */
      this.userId = null;
      /** Seconds between heartbeats announced by the server, or null. */
      this.heartbeat = null;
      /** How many times the connection was re-established. */
      this.reconnects = 0;
      /** How the last connection ended: {code, reason, wasClean}, or null. */
      this.lastClose = null;

      this._state = "closed";
      this._listeners = new Listeners();
      this._subs = new Map(); // channel -> Subscription
      this._pending = new Map(); // request id -> call
      this._queue = []; // {text, call} waiting for the next mls.welcome
      this._nextId = 0;
      this._ws = null;
      this._welcomed = false; // mls.welcome received on the current WebSocket
      this._everOpen = false;
      this._failures = 0; // consecutive failed attempts
      this._attempt = 0; // bumped per attempt: late token promises of old ones are ignored
      this._timers = { reconnect: null, connect: null, ping: null, pong: null };
      this._awaitingPong = false;
      this._onOnline = () => this._retryNow();

      Client.current = this;
      this.connect();
      // Listeners registered right after `new` also hear the first state.
      const emitFirst = () => {
        if (this._state === "connecting" && !this._everOpen) {
          this._listeners.fire("state", ["connecting", { previous: "closed" }]);
        }
      };
      if (typeof queueMicrotask === "function") queueMicrotask(emitFirst);
      else Promise.resolve().then(emitFirst);
    }

    /** "connecting", "open", "reconnecting" or "closed". */
    get state() {
      return this._state;
    }

    /** Whether events can be sent right now (else they are queued or rejected). */
    get connected() {
      return this._ready();
    }

    /** The subscribed channels (confirmed or not), in subscription order. */
    get channels() {
      return Array.from(this._subs.keys());
    }

    // -- listeners ------------------------------------------------------------------------

    /**
     * Listen to a server event, `fn(data, envelope)`; to "*" (every server event),
     * `fn(event, data, envelope)`; or to a local event: "state" `fn(state, info)` with info
     * `{previous, code?, reason?, attempt?, delay?}`, "welcome" `fn(data)` on every
     * (re)connection. Channel messages reach both their subscription and these listeners.
     * @returns {function(): void} a function that removes the listener.
     */
    on(event, fn) {
      return this._listeners.add(event, fn);
    }

    /** Like {@link Client#on}, called once. */
    once(event, fn) {
      const off = this._listeners.add(event, function () {
        off();
        return fn.apply(this, arguments);
      });
      return off;
    }

    /** Remove a listener (every listener of `event` when `fn` is omitted). */
    off(event, fn) {
      this._listeners.remove(event, fn);
    }

    /**
     * A promise for the next "open" state (at once when open): resolves with the client,
     * rejects with a ClosedError if it closes for good first.
     */
    ready() {
      if (this._ready()) return Promise.resolve(this);
      if (this._state === "closed") return Promise.reject(this._closedError("the client is closed"));
      return new Promise((resolve, reject) => {
        const off = this.on("state", (state) => {
          if (state === "open") {
            off();
            resolve(this);
          } else if (state === "closed") {
            off();
            reject(this._closedError("the client closed before it opened"));
          }
        });
      });
    }

    // -- sending --------------------------------------------------------------------------

    /**
     * Send an event. Without `{ack: true}` it is fire-and-forget: returns true when sent or
     * queued (while connecting or reconnecting, up to `queue` messages), false when dropped
     * (queue full, or the client closed). With `{ack: true}` it is {@link Client#request}.
     *
     * @param {string} event 1 to 128 characters.
     * @param {*} [data] anything JSON can encode.
     * @param {{ack: boolean, timeout: ?number}} [options]
     * @returns {boolean|Promise<*>}
     * @throws {TypeError} bad event name, or data JSON cannot encode (fire-and-forget only).
     */
    emit(event, data, options) {
      if (options && options.ack) return this.request(event, data, options);
      checkEvent(event);
      const text = encode({ event: event, data: data === undefined ? null : data });
      return this._send(text, null);
    }

    /**
     * Send an event and wait for the server's reply.
     *
     * Sent now when open; queued while connecting or reconnecting (sent after the next
     * mls.welcome, once the channels are subscribed again).
     *
     * @param {string} event
     * @param {*} [data]
     * @param {{timeout: ?number}} [options] ms before a TimeoutError (null: wait forever).
     * @returns {Promise<*>} the reply's data (the handler's return value). Rejects with
     *     ErrorReply (the server's error), TimeoutError, ClosedError (the connection dropped
     *     after sending, or the client closed), QueueFullError, TypeError (bad arguments).
     */
    request(event, data, options) {
      return new Promise((resolve, reject) => {
        checkEvent(event);
        const id = this._newId();
        const text = encode({ event: event, data: data === undefined ? null : data, id: id });
        if (this._state === "closed") {
          throw this._closedError("the client is closed");
        }
        const timeout =
          options && options.timeout !== undefined ? options.timeout : this.options.timeout;
        const call = { id: id, event: event, resolve: resolve, reject: reject, sent: false };
        this._pending.set(id, call);
        if (timeout !== null && timeout !== Infinity) {
          call.timer = setTimeout(() => this._expire(call, timeout), timeout);
        }
        this._send(text, call);
      });
    }

    // -- channels -------------------------------------------------------------------------

    /**
     * Subscribe to a channel. Subscribing again to the same channel returns the same
     * subscription, with the new handlers added.
     *
     * @param {string} channel e.g. "room:lobby", "private-user.7", "presence-room.1".
     * @param {Object} [handlers]
     * @param {function(string, *, Object)} [handlers.onMessage] `(event, data, envelope)` for
     *     every event sent to the channel.
     * @param {function(Array, Subscription)} [handlers.onPresence] `(members, sub)` after each
     *     (re)subscription to a presence channel.
     * @param {function(Object, Subscription)} [handlers.onJoin] `(member, sub)`: a user joined.
     * @param {function(Object, Subscription)} [handlers.onLeave] `(member, sub)`: a user left.
     * @param {function(Error, Subscription)} [handlers.onError] the server refused a
     *     resubscription after a reconnect (the subscription is dropped).
     * @returns {Promise<Subscription>} resolved when the server confirms; rejected with an
     *     ErrorReply ("forbidden", "invalid_channel" ...) or a ClosedError.
     */
    subscribe(channel, handlers) {
      if (typeof channel !== "string" || channel.length === 0) {
        return Promise.reject(new TypeError("a channel name is a non-empty string"));
      }
      if (this._state === "closed") {
        return Promise.reject(this._closedError("the client is closed"));
      }
      let sub = this._subs.get(channel);
      if (!sub) {
        sub = new Subscription(this, channel);
        this._subs.set(channel, sub);
        // Not open: the next mls.welcome subscribes every channel.
        if (this._ready()) this._sendSubscribe(sub);
      }
      sub._addHandlers(handlers);
      return sub.ready;
    }

    /**
     * Leave a channel (see {@link Subscription#unsubscribe}).
     * @returns {Promise<?Object>}
     */
    unsubscribe(channel) {
      const sub = this._subs.get(channel);
      return sub ? sub.unsubscribe() : Promise.resolve(null);
    }

    /** The subscription to `channel`, or undefined. */
    subscription(channel) {
      return this._subs.get(channel);
    }

    // -- HTTP -----------------------------------------------------------------------------

    /**
     * `window.fetch` with the `X-Socket-ID` header set to this connection's id (same-origin
     * requests only), so the server can leave this connection out of the broadcast.
     * @returns {Promise<Response>}
     */
    fetch(input, init) {
      return fetchWithSocketId(this.id, input, init);
    }

    /** `{"X-Socket-ID": id}` for other HTTP libraries (`{}` while not open). */
    headers() {
      return this.id ? { [SOCKET_ID_HEADER]: this.id } : {};
    }

    // -- life cycle -----------------------------------------------------------------------

    /**
     * Connect again after the client closed (the constructor connects by itself). The
     * subscriptions held when it closed are subscribed again. No-op unless closed.
     * @returns {Client} this client.
     */
    connect() {
      if (this._state !== "closed") return this;
      this._failures = 0;
      if (root.addEventListener) root.addEventListener("online", this._onOnline);
      this._setState("connecting", {});
      this._open();
      return this;
    }

    /**
     * Close for good: no reconnection. Pending requests reject with a ClosedError, queued
     * messages are dropped; the subscriptions are kept for a later {@link Client#connect}.
     * @param {number} [code=1000] 1000 or 3000-4999 (what browsers allow).
     * @param {string} [reason=""]
     */
    close(code, reason) {
      const closeCode = code === undefined ? 1000 : code;
      if (closeCode !== 1000 && !(closeCode >= 3000 && closeCode <= 4999)) {
        throw new RangeError("a browser may close with 1000 or 3000-4999 only");
      }
      if (this._state === "closed") return;
      const ws = this._detach();
      if (ws) {
        try {
          ws.close(closeCode, reason || "");
        } catch (err) {
          ws.close(closeCode); // a reason over 123 bytes
        }
      }
      this._finish(closeCode, reason || "closed by the client", true);
    }

    // -- internals: connecting ------------------------------------------------------------

    _setState(state, info) {
      const previous = this._state;
      this._state = state;
      const detail = Object.assign({ previous: previous }, info);
      if (this.options.debug) console.debug("mlsockets: %s -> %s", previous, state, detail);
      // "reconnecting" repeats once per scheduled attempt; other states only on change.
      if (state !== previous || state === "reconnecting") {
        this._listeners.fire("state", [state, detail]);
      }
    }

    _ready() {
      const ws = this._ws;
      return ws !== null && this._welcomed && ws.readyState === 1; // WebSocket.OPEN
    }

    /** Start one connection attempt (after the token, when `token` is a function). */
    _open() {
      const stale = this._detach(); // defensive: one WebSocket per client at a time
      if (stale) stale.close(1000);
      const attempt = ++this._attempt;
      this._timers.connect = setTimeout(() => {
        if (attempt === this._attempt) this._abandon("connect timeout");
      }, this.options.connectTimeout);
      const token = this.options.token;
      if (typeof token !== "function") {
        this._openSocket(token);
        return;
      }
      Promise.resolve()
        .then(() => token())
        .then(
          (value) => {
            if (attempt === this._attempt && this._state !== "closed") this._openSocket(value);
          },
          (err) => {
            if (attempt !== this._attempt || this._state === "closed") return;
            report(err);
            this._lost(1006, "the token function failed", false);
          },
        );
    }

    _openSocket(token) {
      const url = new URL(this.url);
      if (token !== null && token !== undefined && token !== "") {
        url.searchParams.set("token", String(token));
      }
      let ws;
      try {
        ws = new root.WebSocket(url.href, [this.subprotocol]);
      } catch (err) {
        // A forbidden port or a malformed URL: retrying cannot help.
        report(err);
        this._finish(1002, String(err && err.message ? err.message : err), false);
        return;
      }
      this._ws = ws;
      this._welcomed = false;
      ws.onopen = () => {
        if (this._ws === ws && ws.protocol !== this.subprotocol) {
          this._fail(`the server did not select ${this.subprotocol}`);
        }
      };
      ws.onmessage = (ev) => {
        if (this._ws === ws) this._receive(ev.data);
      };
      // A failed connection fires "error" then "close": "close" carries the details.
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        if (this._ws === ws) {
          this._detach();
          this._lost(ev.code, ev.reason, ev.wasClean);
        }
      };
    }

    /** Forget the current WebSocket: its late events are ignored. Returns it (or null). */
    _detach() {
      const ws = this._ws;
      this._ws = null;
      this._welcomed = false;
      this.id = null;
      this._stopHeartbeat();
      this._clearTimer("connect");
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = null;
      }
      return ws;
    }

    /** The server broke the wire contract: close for good (retrying would not help). */
    _fail(reason) {
      const ws = this._detach();
      if (ws) ws.close(1000, "protocol error");
      if (typeof console !== "undefined") console.error("mlsockets: " + reason);
      this._finish(1002, reason, false);
    }

    /**
     * Abandon a connection that looks dead (no heartbeat, no welcome in time) without
     * waiting for its closing handshake, which a dead peer never completes.
     */
    _abandon(reason) {
      const ws = this._detach();
      if (ws) ws.close(4000, reason);
      this._lost(1006, reason, false);
    }

    /** The current attempt or connection ended: reconnect, or close for good. */
    _lost(code, reason, wasClean) {
      this._attempt += 1; // a pending token promise must not open a socket any more
      this._clearTimer("connect");
      this.lastClose = { code: code, reason: reason || "", wasClean: !!wasClean };
      this._rejectSent(code, reason);
      if (this._state === "closed") return;
      const b = this.options.backoff;
      const fatal = FATAL_CLOSE_CODES.indexOf(code) >= 0;
      if (!this.options.reconnect || fatal || this._failures >= b.maxAttempts) {
        this._finish(code, reason, wasClean);
        return;
      }
      // Full jitter: uniform in [0, cap]; clients dropped together do not return together.
      const cap = Math.min(b.max, b.initial * Math.pow(b.factor, Math.min(this._failures, 64)));
      const delay = Math.random() * cap;
      this._failures += 1;
      this._clearTimer("reconnect");
      this._timers.reconnect = setTimeout(() => {
        this._timers.reconnect = null;
        this._open();
      }, delay);
      this._setState("reconnecting", {
        code: code,
        reason: reason || "",
        attempt: this._failures,
        delay: delay,
      });
    }

    /** The browser is back online: skip the rest of the backoff. */
    _retryNow() {
      if (this._state === "reconnecting" && this._timers.reconnect !== null) {
        this._clearTimer("reconnect");
        this._open();
      }
    }

    /** Closed for good: reject everything waiting, stop every timer. */
    _finish(code, reason, wasClean) {
      this.lastClose = { code: code, reason: reason || "", wasClean: !!wasClean };
      this._attempt += 1; // a pending token promise must not open a socket any more
      for (const name of Object.keys(this._timers)) this._clearTimer(name);
      if (root.removeEventListener) root.removeEventListener("online", this._onOnline);
      const error = this._closedError("the client is closed", code, reason);
      const calls = Array.from(this._pending.values());
      this._pending.clear();
      this._queue = [];
      for (const call of calls) this._settle(call, null, error);
      for (const sub of this._subs.values()) {
        sub.subscribed = false;
        if (!sub._settled) {
          // Refused for good: forget it, like a refused subscribe.
          this._subs.delete(sub.channel);
          sub._refused(error);
        }
      }
      this._setState("closed", { code: code, reason: reason || "" });
    }

    // -- internals: receiving -------------------------------------------------------------

    _receive(message) {
      if (typeof message !== "string") return; // binary messages are not JSON envelopes
      let envelope;
      try {
        envelope = JSON.parse(message);
      } catch (err) {
        console.warn("mlsockets: dropping an undecodable message", err);
        return;
      }
      if (!isObject(envelope)) {
        console.warn("mlsockets: dropping a message that is not an envelope");
        return;
      }
      this._awaitingPong = false; // any message proves the connection alive
      if (Object.prototype.hasOwnProperty.call(envelope, "reply")) {
        const call = this._pending.get(envelope.reply);
        if (call) this._settle(call, envelope, null);
        return;
      }
      const event = envelope.event;
      if (typeof event !== "string") {
        console.warn("mlsockets: dropping an envelope without an event");
        return;
      }
      const data = envelope.data === undefined ? null : envelope.data;
      if (!this._welcomed) {
        if (event !== "mls.welcome" || !isObject(data) || typeof data.connection_id !== "string") {
          this._fail("the server's first message was not mls.welcome");
          return;
        }
        this._welcome(data, envelope);
        return;
      }
      this._route(event, data, envelope);
    }

    _welcome(data, envelope) {
      this._clearTimer("connect");
      this._welcomed = true;
      this.id = data.connection_id;
      this.userId = data.user_id === undefined ? null : data.user_id;
      this.heartbeat =
        typeof data.heartbeat === "number" && data.heartbeat > 0 ? data.heartbeat : null;
      if (this._everOpen) this.reconnects += 1;
      this._everOpen = true;
      this._failures = 0;
      // The server handles one connection's messages in order: subscribing first means the
      // queued events run with their channels joined.
      for (const sub of this._subs.values()) this._sendSubscribe(sub);
      this._flush();
      this._startHeartbeat();
      this._setState("open", {});
      if (this._state !== "open") return; // a state listener closed the client
      this._listeners.fire("welcome", [data, envelope]);
      this._dispatch("mls.welcome", data, envelope);
    }

    /** Route a server event to its subscription, then to the client's listeners. */
    _route(event, data, envelope) {
      const channel =
        typeof envelope.channel === "string"
          ? envelope.channel
          : isObject(data) && typeof data.channel === "string"
            ? data.channel
            : null;
      const sub = channel === null ? undefined : this._subs.get(channel);
      if (event.startsWith("mls.")) {
        if (sub && sub.presence && isObject(data)) {
          if (event === "mls.presence" && Array.isArray(data.members)) sub._presence(data.members);
          else if (event === "mls.joined" && isObject(data.member)) sub._joined(data.member);
          else if (event === "mls.left" && isObject(data.member)) sub._left(data.member);
        }
        if (event === "mls.error" && !this._listeners.has("mls.error")) {
          console.warn("mlsockets: the server reported an error", data);
        }
      } else if (sub && typeof envelope.channel === "string") {
        sub._message(event, data, envelope);
      }
      this._dispatch(event, data, envelope);
    }

    _dispatch(event, data, envelope) {
      if (LOCAL_EVENTS.indexOf(event) < 0) this._listeners.fire(event, [data, envelope]);
      this._listeners.fire("*", [event, data, envelope]);
    }

    // -- internals: requests --------------------------------------------------------------

    _newId() {
      this._nextId = this._nextId >= MAX_ID ? 1 : this._nextId + 1;
      return this._nextId;
    }

    /** Send now, or queue until the next mls.welcome. `call` is a request, null otherwise. */
    _send(text, call) {
      if (this._ready()) {
        this._ws.send(text);
        if (call) call.sent = true;
        return true;
      }
      const error =
        this._state === "closed"
          ? this._closedError("the client is closed")
          : this._queue.length >= this.options.queue
            ? new QueueFullError("not connected, and the queue is full")
            : null;
      if (error === null) {
        this._queue.push({ text: text, call: call });
        return true;
      }
      if (call) {
        this._pending.delete(call.id);
        this._settle(call, null, error);
      }
      return false;
    }

    _flush() {
      const queue = this._queue;
      this._queue = [];
      for (const item of queue) {
        // A request that timed out while queued is not sent at all.
        if (item.call && !this._pending.has(item.call.id)) continue;
        this._ws.send(item.text);
        if (item.call) item.call.sent = true;
      }
    }

    _expire(call, timeout) {
      if (this._pending.get(call.id) !== call) return;
      this._pending.delete(call.id);
      this._queue = this._queue.filter((item) => item.call !== call);
      this._settle(call, null, new TimeoutError(`no reply to ${call.event} within ${timeout} ms`));
    }

    /** Resolve or reject a request with a reply envelope or an error. */
    _settle(call, envelope, error) {
      this._pending.delete(call.id);
      if (call.timer) clearTimeout(call.timer);
      if (error) {
        call.reject(error);
      } else if (isObject(envelope.error)) {
        const e = envelope.error;
        call.reject(new ErrorReply(String(e.code), String(e.message || ""), e.fields));
      } else {
        call.resolve(envelope.data === undefined ? null : envelope.data);
      }
    }

    /** The connection dropped: requests already sent will never get their reply. */
    _rejectSent(code, reason) {
      for (const call of Array.from(this._pending.values())) {
        if (call.sent) {
          const error = this._closedError(
            "the connection closed before the reply; the server may or may not have handled it",
            code,
            reason,
          );
          this._settle(call, null, error);
        }
      }
    }

    _closedError(message, code, reason) {
      const last = this.lastClose;
      return new ClosedError(
        message,
        code !== undefined ? code : last ? last.code : null,
        reason !== undefined ? reason : last ? last.reason : "",
      );
    }

    _sendSubscribe(sub) {
      const timeout = this.options.timeout;
      this.request("mls.subscribe", { channel: sub.channel }, { timeout: timeout }).then(
        (reply) => {
          if (this._subs.get(sub.channel) === sub) sub._confirmed(reply);
        },
        (err) => {
          if (this._subs.get(sub.channel) !== sub) return;
          if (err instanceof ErrorReply) {
            this._subs.delete(sub.channel);
            sub._refused(err);
          } else if (err instanceof TimeoutError) {
            // Still subscribed again after the next reconnection.
            console.warn(`mlsockets: subscribing to ${sub.channel} timed out`);
          }
          // ClosedError: the next mls.welcome subscribes again (or _finish settles it).
        },
      );
    }

    _unsubscribe(sub) {
      if (this._subs.get(sub.channel) !== sub) return Promise.resolve(null);
      this._subs.delete(sub.channel);
      sub.active = false;
      sub.subscribed = false;
      if (!sub._settled) {
        sub._settled = true;
        sub.ready.catch(() => {}); // the caller asked for it: not an unhandled rejection
        sub._reject(new MLSocketsError(`unsubscribed from ${sub.channel} before it was confirmed`));
      }
      if (!this._ready()) return Promise.resolve(null); // the server forgot it with the connection
      return this.request("mls.unsubscribe", { channel: sub.channel }).catch((err) => {
        if (err instanceof ErrorReply && err.code === "not_subscribed") {
          return { channel: sub.channel };
        }
        if (err instanceof ClosedError) return null; // gone with the connection
        throw err;
      });
    }

    // -- internals: heartbeat -------------------------------------------------------------

    /**
     * Application-level heartbeat: every `heartbeat` seconds (from mls.welcome) send
     * mls.ping; when nothing at all arrives within `pingTimeout`, the connection is dead
     * (a sleeping laptop, a silently dropped NAT entry): abandon it and reconnect. Protocol
     * pings from the server are answered by the browser itself.
     */
    _startHeartbeat() {
      this._stopHeartbeat();
      if (!this.heartbeat) return;
      const ws = this._ws;
      const interval = this.heartbeat * 1000;
      const timeout = this.options.pingTimeout || interval;
      this._timers.ping = setInterval(() => {
        if (this._ws !== ws || this._awaitingPong) return;
        this._awaitingPong = true;
        ws.send(encode({ event: "mls.ping", data: null }));
        this._clearTimer("pong");
        this._timers.pong = setTimeout(() => {
          if (this._ws === ws && this._awaitingPong) this._abandon("heartbeat timeout");
        }, timeout);
      }, interval);
    }

    _stopHeartbeat() {
      this._clearTimer("ping");
      this._clearTimer("pong");
      this._awaitingPong = false;
    }

    _clearTimer(name) {
      const timer = this._timers[name];
      if (timer !== null) {
        clearTimeout(timer); // clears setInterval timers too (shared id pool)
        this._timers[name] = null;
      }
    }
  }

  /** The most recently created client: the one MLSockets.fetch() uses. */
  Client.current = null;

  /**
   * `window.fetch` with `X-Socket-ID` of the most recently created client (see
   * {@link Client#fetch}); a plain fetch when there is none or it is not open.
   */
  function fetchWithCurrent(input, init) {
    const client = Client.current;
    return fetchWithSocketId(client ? client.id : null, input, init);
  }

  /** The connection id of the most recently created client, or null. */
  function socketId() {
    return Client.current ? Client.current.id : null;
  }

  return Object.freeze({
    VERSION: VERSION,
    Client: Client,
    Subscription: Subscription,
    MLSocketsError: MLSocketsError,
    ErrorReply: ErrorReply,
    TimeoutError: TimeoutError,
    ClosedError: ClosedError,
    QueueFullError: QueueFullError,
    fetch: fetchWithCurrent,
    socketId: socketId,
    SUBPROTOCOLS: SUBPROTOCOLS,
    FATAL_CLOSE_CODES: FATAL_CLOSE_CODES,
    SOCKET_ID_HEADER: SOCKET_ID_HEADER,
    STATES: STATES,
  });
});
