// Real peers of the application protocols wsinspect decodes, for tests/test_protocols_peers.py.
// usage: node protocol_peers.mjs KIND [URL]
//   graphql-ws | subscriptions-transport-ws | json-rpc: starts the library's own server on a
//     loopback port, prints {"port": N}, reads the URL to connect to (the proxy) from stdin,
//     then runs the library's own client against it;
//   stomp URL (@stomp/stompjs) | signalr URL (@microsoft/signalr): a client only.
// Every WebSocket message any peer sends is logged as one JSON line
// {"peer": "client"|"server", "sent": "<text>"} (binary as {"sent_binary": <length>}),
// by wrapping send() of each copy of `ws` the libraries load; {"done": true} ends the run.
import { createRequire } from "node:module";
import readline from "node:readline";

const require = createRequire(import.meta.url);
const log = (entry) => process.stdout.write(JSON.stringify(entry) + "\n");

for (const path of ["ws", "./node_modules/subscriptions-transport-ws/node_modules/ws",
                    "./node_modules/@microsoft/signalr/node_modules/ws"]) {
  let WebSocketClass;
  try { WebSocketClass = require(path); } catch { continue; }
  const send = WebSocketClass.prototype.send;
  WebSocketClass.prototype.send = function (data, ...rest) {
    const peer = this._isServer ? "server" : "client";
    if (typeof data === "string") log({ peer, sent: data });
    else log({ peer, sent_binary: data.byteLength ?? data.length });
    return send.call(this, data, ...rest);
  };
}

const timer = setTimeout(() => { console.error("timeout"); process.exit(3); }, 20000);
const finish = () => { clearTimeout(timer); log({ done: true }); setTimeout(() => process.exit(0), 50); };
const [kind, argUrl] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function proxyUrl(port) {
  log({ port });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) return line.trim();
}

async function schema() {
  const { buildSchema } = await import("graphql");
  return buildSchema(`
    type Query { hello: String }
    type Subscription { greetings: String }
  `);
}

const roots = {
  query: { hello: () => "world" },
  subscription: {
    greetings: async function* () { for (const hi of ["Hi", "Bonjour"]) yield { greetings: hi }; },
  },
};

async function graphqlTransportWs() {
  const { WebSocketServer, WebSocket } = await import("ws");
  const { useServer } = await import("graphql-ws/lib/use/ws");  // graphql-ws 5: Node 18 (Debian 12)
  const { createClient } = await import("graphql-ws");
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/graphql" });
  await new Promise((resolve) => wss.on("listening", resolve));
  useServer({ schema: await schema(), roots }, wss);
  const url = await proxyUrl(wss.address().port);
  const client = createClient({ url, webSocketImpl: WebSocket, lazy: false, keepAlive: 100,
                                retryAttempts: 0 });
  await new Promise((resolve) => client.on("connected", resolve));
  const run = (payload) => new Promise((resolve, reject) => {
    const results = [];
    client.subscribe(payload, { next: (r) => results.push(r), error: reject,
                                complete: () => resolve(results) });
  });
  log({ result: await run({ query: "query Hello { hello }" }) });
  log({ result: await run({ query: "subscription Greetings { greetings }",
                            operationName: "Greetings" }) });
  await sleep(250);  // the keep-alive pings
  await client.dispose();
  wss.close();
}

async function subscriptionsTransportWs() {
  const ws = require("./node_modules/subscriptions-transport-ws/node_modules/ws");
  const { SubscriptionServer, SubscriptionClient } = require("subscriptions-transport-ws");
  const { execute, subscribe } = await import("graphql");
  const wss = new ws.Server({ host: "127.0.0.1", port: 0, path: "/graphql" });
  await new Promise((resolve) => wss.on("listening", resolve));
  SubscriptionServer.create({ schema: await schema(), rootValue: { hello: () => "world",
    greetings: roots.subscription.greetings }, execute, subscribe, keepAlive: 100 }, wss);
  const url = await proxyUrl(wss.address().port);
  const client = new SubscriptionClient(url, { reconnect: false }, ws);
  const run = (request) => new Promise((resolve, reject) => {
    const results = [];
    client.request(request).subscribe({ next: (r) => results.push(r), error: reject,
                                        complete: () => resolve(results) });
  });
  log({ result: await run({ query: "query Hello { hello }" }) });
  log({ result: await run({ query: "subscription Greetings { greetings }",
                            operationName: "Greetings" }) });
  await sleep(250);
  client.close();
  wss.close();
}

async function jsonRpc() {
  const { Server, Client } = await import("rpc-websockets");
  const server = new Server({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.on("listening", resolve));
  server.register("sum", (params) => params[0] + params[1]);
  server.register("slow", async () => { await sleep(150); return "late"; });
  server.register("fail", () => { throw new Error("broken"); });
  server.register("greet", () => true);  // a notification: no answer
  server.event("tick");
  const url = await proxyUrl(server.wss.address().port);
  const client = new Client(url, { reconnect: false });
  await new Promise((resolve) => client.on("open", resolve));
  log({ result: await client.call("sum", [2, 3]) });
  log({ result: await client.call("slow") });
  try { await client.call("fail"); } catch (error) { log({ error: error.message ?? error }); }
  await client.notify("greet", ["hi"]);
  await client.subscribe("tick");
  server.emit("tick", 1);
  await sleep(150);
  client.close();
  await server.close();
}

async function stomp(url) {
  const { Client } = await import("@stomp/stompjs");
  const { WebSocket } = await import("ws");
  const received = [];
  const client = new Client({
    webSocketFactory: () => new WebSocket(url, ["v12.stomp", "v11.stomp", "v10.stomp"]),
    connectHeaders: { login: "guest", passcode: "guest" },
    heartbeatIncoming: 0, heartbeatOutgoing: 0, reconnectDelay: 0,
  });
  await new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onStompError = (frame) => reject(new Error(frame.headers.message));
    client.activate();
  });
  const receipt = (id) => new Promise((resolve) => client.watchForReceipt(id, resolve));
  const subscribed = receipt("sub-1");
  client.subscribe("/queue/wsinspect", (message) => received.push(message.body),
                   { receipt: "sub-1" });
  await subscribed;
  const sent = receipt("send-1");
  client.publish({ destination: "/queue/wsinspect", body: "hello", headers: { receipt: "send-1" } });
  await sent;
  while (received.length < 1) await sleep(20);
  log({ result: received });
  await client.deactivate();
}

async function signalr(url) {
  const signalR = await import("@microsoft/signalr");
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(url, { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets })
    .configureLogging(signalR.LogLevel.None)
    .build();
  const news = new Promise((resolve) => connection.on("News", resolve));
  await connection.start();
  log({ result: await connection.invoke("Add", 2, 3) });
  await connection.send("Notify", "hi");
  log({ result: await news });
  const items = [];
  await new Promise((resolve, reject) => connection.stream("Counter", 3).subscribe({
    next: (item) => items.push(item), error: reject, complete: resolve }));
  log({ result: items });
  await connection.stop();
}

const kinds = { "graphql-ws": graphqlTransportWs, "subscriptions-transport-ws": subscriptionsTransportWs,
                "json-rpc": jsonRpc, stomp, signalr };
kinds[kind](argUrl).then(finish, (error) => { console.error(`error: ${error.stack ?? error}`); process.exit(2); });
