// Node's `ws` through an HTTP proxy agent, as Node apps reach a proxy:
// ws:// with http-proxy-agent sends an absolute-form `GET http://…` upgrade;
// wss:// with https-proxy-agent opens a CONNECT tunnel.
// usage: node ws_client.mjs URL PROXY MESSAGE   (NODE_EXTRA_CA_CERTS trusts the proxy's CA)
import WebSocket from "ws";
import { HttpProxyAgent } from "http-proxy-agent";
import { HttpsProxyAgent } from "https-proxy-agent";

const [url, proxy, message] = process.argv.slice(2);
const agent = url.startsWith("wss:") ? new HttpsProxyAgent(proxy) : new HttpProxyAgent(proxy);
const ws = new WebSocket(url, { agent });
const timer = setTimeout(() => { console.error("timeout"); process.exit(3); }, 10000);
ws.on("open", () => ws.send(message));
ws.on("message", (data) => { console.log(`echo: ${data}`); ws.close(1000, "done"); });
ws.on("close", (code) => { clearTimeout(timer); console.log(`closed: ${code}`); });
ws.on("error", (err) => { console.error(`error: ${err.message}`); process.exit(2); });
