// Socket.IO 4 peer for bench/: rooms stand in for conversations.
//
// Configured per the Socket.IO docs for several nodes: the Redis adapter
// (sharded Pub/Sub, the recommended variant for Redis 7) with the `redis`
// client; websocket transport; bufferutil/utf-8-validate installed.
// Auth: HS256 JWT in the handshake `auth.token`, verified before the
// connection is accepted (the same secret and claims as the chat gateway).
//
// Events (client -> server, each with an acknowledgement callback):
//   join(room)              -> joins the room, ack(true)
//   msg(room, content)      -> broadcast "msg" to the room's other members, ack(1)
//                              (refused with ack({error}) when not a member)
//
// Env: PORT, REDIS_URL, JWT_SECRET. Binds 127.0.0.1 only.
"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createShardedAdapter } = require("@socket.io/redis-adapter");

const port = Number(process.env.PORT || 3000);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const secret = process.env.JWT_SECRET || "";

function b64url(buf) {
  return buf.toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

function verifyJwt(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
    claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  } catch {
    return null;
  }
  if (header.alg !== "HS256") return null;
  const expected = b64url(crypto.createHmac("sha256", secret).update(parts[0] + "." + parts[1]).digest());
  const given = Buffer.from(parts[2]);
  const want = Buffer.from(expected);
  if (given.length !== want.length || !crypto.timingSafeEqual(given, want)) return null;
  if (typeof claims.exp !== "number" || claims.exp * 1000 < Date.now()) return null;
  if (typeof claims.sub !== "string" || !claims.sub) return null;
  return claims.sub;
}

async function main() {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer((req, res) => {
    if (req.url === "/health") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ok");
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const io = new Server(httpServer, {
    adapter: createShardedAdapter(pubClient, subClient),
    transports: ["websocket"],
    serveClient: false,
    perMessageDeflate: false,
  });

  io.use((socket, next) => {
    const user = verifyJwt(socket.handshake.auth && socket.handshake.auth.token);
    if (!user) return next(new Error("unauthorized"));
    socket.data.user = user;
    next();
  });

  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(String(room));
      if (typeof ack === "function") ack(true);
    });
    socket.on("msg", (room, content, ack) => {
      if (!socket.rooms.has(room)) {
        if (typeof ack === "function") ack({ error: "not a member" });
        return;
      }
      socket.to(room).emit("msg", content);
      if (typeof ack === "function") ack(1);
    });
  });

  httpServer.listen(port, "127.0.0.1", () => {
    process.stdout.write(`socket.io listening on 127.0.0.1:${port}\n`);
  });
  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
