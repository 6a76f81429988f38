"""A chat in one file: the app built by docs/tutorial.md.

Run it from this folder: mlsockets serve chat:app --bind 127.0.0.1:8000
"""

# ruff: noqa: E402 - each step of the tutorial imports what it needs where it begins

from flask import Flask, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user
from werkzeug.security import check_password_hash, generate_password_hash

app = Flask(__name__)
app.config["SECRET_KEY"] = "change me: a long random string"  # signs the session cookie

login_manager = LoginManager(app)
login_manager.login_view = "login"  # where @login_required sends anonymous visitors


class User(UserMixin):
    def __init__(self, id, name, password):
        self.id = id
        self.name = name
        self.password_hash = generate_password_hash(password)


USERS = {
    "alice": User("alice", "Alice", "wonderland"),
    "bob": User("bob", "Bob", "builder"),
}


@login_manager.user_loader
def load_user(user_id):
    return USERS.get(user_id)


LOGIN_FORM = """<form method="post">
  <input name="username" placeholder="alice or bob"> <input name="password" type="password">
  <button>Log in</button> {error}
</form>"""


@app.route("/login", methods=["GET", "POST"])
def login():
    error = ""
    if request.method == "POST":
        user = USERS.get(request.form.get("username", ""))
        password = request.form.get("password", "")
        if user is not None and check_password_hash(user.password_hash, password):
            login_user(user)
            return redirect(url_for("index"))
        error = "Unknown user or wrong password."
    return LOGIN_FORM.format(error=error)


@app.route("/")
@login_required
def index():
    return f"Hello, {current_user.name}! The chat is at /chat."


from flask_mlsockets import MLSockets

# WebSockets at /ws, the browser client at /ws/mlsockets.js.
sockets = MLSockets(app)


from marshmallow import Schema, fields, validate

from flask_mlsockets import broadcaster

ROOMS = ("lobby", "random")


class MessageSchema(Schema):
    room = fields.String(required=True, validate=validate.OneOf(ROOMS))
    text = fields.String(required=True, validate=validate.Length(min=1, max=500))


@sockets.on("chat.send", schema=MessageSchema)
def send(conn, data):
    message = {"room": data["room"], "text": data["text"], "from": conn.principal.user_id}
    # To everyone in the room but the sender, who gets the message as its ack instead.
    broadcaster.emit("chat.message", message, to=f"room:{data['room']}", skip_sender=True)
    return message


@sockets.channel("room:{name}")
def existing_room(principal, name):
    return name in ROOMS


@sockets.user_info
def public_info(user):
    # Public: every member of a presence channel sees it. Never put secrets here.
    return {"name": user.name}


@sockets.channel("presence-room.{name}")
def room_member(principal, name):
    if name not in ROOMS:
        return False
    return {"name": principal.info["name"]}  # allowed; what the other members see


from flask import render_template_string

PAGE = """<!doctype html>
<title>Chat</title>
<p>Hello {{ current_user.name }}. Here now: <span id="here"></span></p>
<ul id="messages"></ul>
<form id="send"><input id="text" autocomplete="off"> <button>Send</button></form>
<p id="error"></p>
<script src="{{ url_for('mlsockets_client') }}"></script>
<script>
  const sock = new MLSockets.Client();  // ws(s)://this host/ws, with the session cookie
  const show = (m) => {
    const li = document.createElement("li");
    li.textContent = `${m.from}: ${m.text}`;  // textContent: users wrote this
    document.getElementById("messages").append(li);
  };
  const renderHere = (sub) => {
    document.getElementById("here").textContent = sub.members.map((m) => m.info.name).join(", ");
  };
  sock.subscribe("room:lobby").then((room) => room.on("chat.message", show));
  sock.subscribe("presence-room.lobby", {
    onPresence: (members, sub) => renderHere(sub),
    onJoin: (member, sub) => renderHere(sub),
    onLeave: (member, sub) => renderHere(sub),
  });
  document.getElementById("send").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("text");
    try {
      show(await sock.request("chat.send", {room: "lobby", text: input.value}));  // the ack
      input.value = "";
      document.getElementById("error").textContent = "";
    } catch (err) {  // MLSockets.ErrorReply: err.code, err.fields
      document.getElementById("error").textContent = JSON.stringify(err.fields || err.message);
    }
  });
</script>
"""


@app.route("/chat")
@login_required
def chat():
    return render_template_string(PAGE)
