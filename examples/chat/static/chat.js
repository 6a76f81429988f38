// The chat page. Plain JavaScript, no build step; the WebSocket client is /ws/mlsockets.js,
// served by the Flask extension (docs/browser-client.md). The handshake carries the page's
// session cookie: Flask-Login decides who we are, nothing to configure here.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const me = config.me;
  const $ = (selector) => document.querySelector(selector);

  const sock = new MLSockets.Client({backoff: {initial: 500, max: 5000, factor: 2}});
  // For the browser test and for poking around in the console.
  const chat = (window.chat = {sock, room: null, seen: new Set()});

  // -- helpers ----------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text; // never innerHTML: users write this
    return node;
  }

  function avatar(userId, name) {
    const node = el("span", "avatar", (name || userId).charAt(0).toUpperCase());
    node.dataset.user = userId;
    return colorize(node);
  }

  function colorize(node) {
    let hash = 0;
    for (const c of node.dataset.user) hash = (hash * 31 + c.charCodeAt(0)) % 360;
    node.style.background = `hsl(${hash} 55% 48%)`;
    return node;
  }

  function time(at) {
    return new Date(at * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  }

  // An error of a request (sock.request) or of a fetch, as a sentence for the page.
  function describe(err) {
    if (err instanceof MLSockets.ErrorReply) {
      if (err.code === "invalid" && err.fields) return fieldErrors(err.fields);
      return err.message || err.code;
    }
    if (err instanceof MLSockets.TimeoutError) return "No answer from the server yet.";
    if (err instanceof MLSockets.ClosedError) {
      return "The connection dropped: the message may not have been sent.";
    }
    if (err instanceof MLSockets.QueueFullError) return "Offline, and too much is waiting.";
    return String(err && err.message ? err.message : err);
  }

  function fieldErrors(fields) {
    return Object.entries(fields)
      .map(([field, messages]) => `${field}: ${[].concat(messages).join(" ")}`)
      .join("; ");
  }

  // -- connection state -------------------------------------------------------------------

  const LABELS = {
    connecting: "connecting…",
    open: "connected",
    reconnecting: "reconnecting…",
    closed: "disconnected",
  };
  sock.on("state", (state) => {
    const status = $("#status");
    status.dataset.state = state;
    status.textContent = LABELS[state] || state;
  });
  // After a reconnection, fetch what was said in the meantime (already seen ones are skipped).
  sock.on("welcome", () => {
    if (sock.reconnects > 0 && chat.room) loadRoom(chat.room);
  });

  // -- rooms ------------------------------------------------------------------------------

  function enter(room) {
    if (!config.rooms.includes(room)) room = config.rooms[0];
    if (room === chat.room) return;
    const previous = chat.room;
    chat.room = room;
    if (previous) {
      sock.unsubscribe(`room:${previous}`).catch(() => {});
      sock.unsubscribe(`presence-room.${previous}`).catch(() => {});
    }
    $("#room-name").textContent = `# ${room}`;
    $("#messages").replaceChildren();
    $("#send-error").textContent = "";
    chat.seen.clear();
    typers.clear();
    renderTyping();
    renderPresence([]);
    for (const link of document.querySelectorAll("#rooms a")) {
      link.classList.toggle("active", link.dataset.room === room);
    }
    // Messages, topics and typing indicators of the room: see the sock.on() listeners below.
    sock.subscribe(`room:${room}`).catch((err) => showError(describe(err)));
    sock
      .subscribe(`presence-room.${room}`, {
        onPresence: (members) => renderPresence(members),
        onJoin: (member, sub) => renderPresence(sub.members),
        onLeave: (member, sub) => {
          typers.delete(member.user_id);
          renderTyping();
          renderPresence(sub.members);
        },
      })
      .then((sub) => room === chat.room && renderPresence(sub.members))
      .catch((err) => showError(describe(err)));
    loadRoom(room);
  }

  function loadRoom(room) {
    sock
      .request("room.info", {room})
      .then((info) => {
        if (info.room !== chat.room) return;
        setTopic(info.topic);
        info.messages.forEach(addMessage);
      })
      .catch((err) => showError(describe(err)));
  }

  window.addEventListener("hashchange", () => enter(location.hash.slice(1)));

  // -- messages ---------------------------------------------------------------------------

  // Kept in time order: the room's history may arrive after a live message.
  function addMessage(message) {
    if (chat.seen.has(message.id)) return;
    chat.seen.add(message.id);
    const item = el("li", message.user_id === me.id ? "message mine" : "message");
    item.dataset.at = message.at;
    item.append(avatar(message.user_id, message.name));
    const body = el("div", "body");
    const meta = el("div", "meta");
    meta.append(el("strong", "", message.name), el("time", "muted", time(message.at)));
    body.append(meta, el("p", "text", message.text));
    item.append(body);
    const list = $("#messages");
    const later = [...list.children].find((node) => Number(node.dataset.at) > message.at);
    list.insertBefore(item, later || null);
    if (!later) list.scrollTop = list.scrollHeight;
  }

  sock.on("chat.message", (message) => {
    if (message.room !== chat.room) return;
    typers.delete(message.user_id);
    renderTyping();
    addMessage(message);
  });

  function showError(text) {
    $("#send-error").textContent = text;
  }

  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#text");
    showError("");
    // No client-side check on purpose: the server validates (MessageSchema) and an invalid
    // message comes back as an error reply, shown under the box.
    sock
      .request("chat.send", {room: chat.room, text: input.value})
      .then((message) => {
        input.value = "";
        lastTyping = 0;
        addMessage(message); // we are not in the broadcast (skip_sender): the ack is it
      })
      .catch((err) => showError(describe(err)));
  });

  // -- typing indicator -------------------------------------------------------------------

  const TYPING_EVERY = 2000; // ms between two chat.typing events while typing
  const TYPING_SHOWN = 4000; // ms an indicator stays without news
  const typers = new Map(); // user id -> {name, until}
  let lastTyping = 0;
  let typingTimer = null;

  $("#text").addEventListener("input", (event) => {
    const now = Date.now();
    if (!event.target.value || now - lastTyping < TYPING_EVERY || !sock.connected) return;
    lastTyping = now;
    sock.emit("chat.typing", {room: chat.room}); // fire and forget
  });

  sock.on("chat.typing", (data) => {
    if (data.room !== chat.room || data.user_id === me.id) return;
    typers.set(data.user_id, {name: data.name, until: Date.now() + TYPING_SHOWN});
    renderTyping();
  });

  function renderTyping() {
    const now = Date.now();
    for (const [id, typer] of typers) if (typer.until <= now) typers.delete(id);
    const names = [...typers.values()].map((typer) => typer.name).sort();
    $("#typing").textContent =
      names.length === 0
        ? ""
        : names.length === 1
          ? `${names[0]} is typing…`
          : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]} are typing…`;
    clearTimeout(typingTimer);
    if (names.length) typingTimer = setTimeout(renderTyping, 500);
  }

  // -- presence ---------------------------------------------------------------------------

  function renderPresence(members) {
    const sorted = members.slice().sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
    const items = sorted.map((member) => {
      const item = el("li", "person");
      item.dataset.user = member.user_id;
      const label = member.user_id === me.id ? `${nameOf(member)} (you)` : nameOf(member);
      item.append(avatar(member.user_id, nameOf(member)), el("span", "", label));
      return item;
    });
    $("#presence").replaceChildren(...items);
    $("#presence-count").textContent = members.length ? `(${members.length})` : "";
  }

  function nameOf(member) {
    return (member.info && member.info.name) || member.user_id;
  }

  // -- topic: changed over HTTP, "to others" -----------------------------------------------

  function setTopic(topic, by) {
    $("#topic").textContent = topic || "No topic.";
    $("#topic").title = by ? `set by ${by}` : "";
  }

  sock.on("room.topic", (change) => {
    if (change.room === chat.room) setTopic(change.topic, change.name);
  });

  $("#topic-edit").addEventListener("click", () => {
    const form = $("#topic-form");
    form.hidden = !form.hidden;
    form.topic.value = $("#topic").textContent === "No topic." ? "" : $("#topic").textContent;
    if (!form.hidden) form.topic.focus();
  });

  $("#topic-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    // sock.fetch adds X-Socket-ID: the view's broadcast (skip_sender=True) leaves this page
    // out, and the page updates itself from the response instead.
    sock
      .fetch(`/rooms/${encodeURIComponent(chat.room)}/topic`, {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({topic: form.topic.value}),
      })
      .then(readJson)
      .then((change) => {
        setTopic(change.topic, change.name);
        form.hidden = true;
      })
      .catch((err) => showError(describe(err)));
  });

  function readJson(response) {
    return response.json().then((body) => {
      if (response.ok) return body;
      throw new Error(body.errors ? fieldErrors(body.errors) : `HTTP ${response.status}`);
    });
  }

  // -- notifications: POST /notify, and mentions on our private channel --------------------

  function addNotice(title, text) {
    const list = $("#notices");
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const item = el("li", "notice fresh");
    item.append(el("strong", "", title), el("p", "", text));
    list.prepend(item);
    setTimeout(() => item.classList.remove("fresh"), 3000);
  }

  sock.on("notify", (notice) => addNotice(`${notice.name} notified you`, notice.text));
  sock.on("chat.mention", (message) => {
    addNotice(`${message.name} mentioned you in #${message.room}`, message.text);
  });
  // Only we may subscribe to it (see own_channel in sockets.py).
  sock.subscribe(`private-user.${me.id}`).catch((err) => showError(describe(err)));

  $("#notify").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    const result = $("#notify-result");
    const to = form.to.options[form.to.selectedIndex].text;
    sock
      .fetch("/notify", {method: "POST", body: new FormData(form)})
      .then(readJson)
      .then((body) => {
        result.textContent = body.delivered
          ? `Sent to ${to}.`
          : `${to} is not online: nobody got it.`;
        form.text.value = "";
      })
      .catch((err) => {
        result.textContent = describe(err);
      });
  });

  document.querySelectorAll(".avatar[data-user]").forEach(colorize);
  enter(location.hash.slice(1));
})();
