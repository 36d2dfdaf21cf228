// bench/seq_js.mjs: one timed run of N sequential otp.verify calls through the official JS SDK (npm "contiguity"), for bench/run.sh.
// Usage: node bench/seq_js.mjs SDK_DIR URL CALLS WARMUP
// SDK_DIR is the npm --prefix the harness installed the package into.
// The SDK hard-codes https://api.contiguity.com/otp (dist/utils/request.js,
// BASE_URLS) and calls the global fetch, so the global fetch is wrapped to
// rewrite that origin to URL; nothing else of the request changes. For the
// HTTPS round the harness sets NODE_EXTRA_CA_CERTS to the sandbox CA.
// Env: OTP_ID, OTP_CODE, BENCH_TOKEN. Prints "seconds calls errors vmhwm_kib".
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [sdkDir, url, callsArg, warmArg] = process.argv.slice(2);
const calls = Number(callsArg), warm = Number(warmArg);
const API = "https://api.contiguity.com";
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init) => {
  const u = typeof input === "string" ? input : input.url;
  if (!u.startsWith(API)) throw new Error("unexpected URL " + u);
  return realFetch(url + u.slice(API.length), init);
};

const { Contiguity } = await import(pathToFileURL(join(sdkDir, "node_modules/contiguity/dist/index.js")).href);
const client = new Contiguity(process.env.BENCH_TOKEN || "contiguity_sk_bench_token");
const params = { otp_id: process.env.OTP_ID || "otp_missing", otp: process.env.OTP_CODE || "000000" };

const check = (res) => res != null && res.verified === false;
let errors = 0;
for (let i = 0; i < warm; i++) {
  if (!check(await client.otp.verify(params))) throw new Error("js: warm-up call failed");
}
const t0 = process.hrtime.bigint();
for (let i = 0; i < calls; i++) {
  try {
    if (!check(await client.otp.verify(params))) errors++;
  } catch (e) {
    errors++;
  }
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const hwm = Number((readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s*(\d+)/) || [0, -1])[1]);
console.log(`${seconds.toFixed(6)} ${calls} ${errors} ${hwm}`);
