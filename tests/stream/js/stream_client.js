// The official Phoenix JS client (npm `phoenix`, `ws` as the Node transport)
// against a fastpaca node, driven by tests/stream/test_stream_js_client.py.
//
//   node stream_client.js <endpoint> <conversation id> <from_seq> <last_seq>
//
// Joins conversation:<id> with {from_seq}, prints one JSON object per line
// for every channel and socket event, prints {"event":"done"} once it has
// seen message <last_seq>, and exits when the server closes the socket.
// The join params are a function, as a real client's should be: a rejoin
// after a reconnect asks only for what it has not seen yet.
"use strict";

const { Socket } = require("phoenix");
const WebSocket = require("ws");

const [endpoint, conversationId, fromSeqArg, lastSeqArg] = process.argv.slice(2);
const lastSeq = Number(lastSeqArg);
let nextSeq = Number(fromSeqArg);
let done = false;

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

const socket = new Socket(endpoint, {
  transport: WebSocket,
  heartbeatIntervalMs: 200, // many heartbeats in a short test; a missing reply would close the socket
  params: { client: "phoenix-js" },
});
socket.onOpen(() => emit("open"));
socket.onError((error) => emit("socket_error", { message: String(error && error.message) }));
socket.onClose((closeEvent) => {
  emit("close", { code: closeEvent.code, reason: closeEvent.reason });
  if (done) process.exit(0);
});
socket.connect();

const channel = socket.channel(`conversation:${conversationId}`, () => ({ from_seq: nextSeq }));
channel.on("message", (payload, ref, joinRef) => {
  emit("message", {
    seq: payload.seq,
    version: payload.version === undefined ? null : payload.version,
    text: payload.message.parts[0].text,
    ref: ref === undefined ? null : ref,
  });
  nextSeq = payload.seq + 1;
  if (payload.seq >= lastSeq && !done) {
    socket.ping((latencyMs) => {
      emit("ping", { latency_ms: latencyMs });
      done = true;
      emit("done");
    });
  }
});
channel.on("gap", (payload) => emit("gap", payload));
channel.on("tombstone", (payload) => emit("tombstone", payload));
channel.onError((reason) => emit("channel_error", { reason: reason === undefined ? null : reason }));
channel
  .join()
  .receive("ok", (response) => emit("joined", { response }))
  .receive("error", (response) => emit("join_error", { response }))
  .receive("timeout", () => emit("join_timeout"));
