// ioredis, unmodified, through respite: one scenario per family of issue 11. Usage:
//   node families.js <respite port> <upstream port>
// Each scenario asserts on ioredis's results and, where it is about data, on the upstream's own
// state (read over a direct connection to the upstream). Prints "ok <family>" for each; exits
// non-zero on the first failure.
"use strict";
const assert = require("node:assert/strict");
const Redis = require("ioredis");

const [proxyPort, upstreamPort] = process.argv.slice(2).map(Number);
const opened = [];
function client(options = {}) {
  const c = new Redis({ port: proxyPort, host: "127.0.0.1", maxRetriesPerRequest: 0, ...options });
  opened.push(c);
  return c;
}
const upstream = new Redis({ port: upstreamPort, host: "127.0.0.1" });
opened.push(upstream);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Wait until `cond` (async) holds, polling; fails after `ms`. */
async function until(what, cond, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(5);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function blockedClients() {
  const info = await upstream.info("clients");
  return Number(/blocked_clients:(\d+)/.exec(info)[1]);
}

const families = {
  async "blocking pops"() {
    const waiter = client();
    const producer = client();
    const popped = waiter.blpop("q", 0);
    await until("the upstream to block for it", async () => (await blockedClients()) === 1);
    assert.equal(await producer.rpush("q", "job1", "job2"), 2);
    assert.deepEqual(await popped, ["q", "job1"]);
    // BLMOVE into a processing list, as a job queue does; judged on the upstream.
    assert.equal(await waiter.blmove("q", "processing", "LEFT", "RIGHT", 1), "job2");
    assert.deepEqual(await upstream.lrange("processing", 0, -1), ["job2"]);
    assert.equal(await upstream.llen("q"), 0);
    // A timeout is a null.
    assert.equal(await waiter.brpop("empty", 0.05), null);
  },

  async "watch multi exec"() {
    await upstream.set("counter", 0);
    // 5 clients × 10 optimistic increments, retried on a null EXEC: the count is exact.
    const clients = Array.from({ length: 5 }, () => client());
    let conflicts = 0;
    await Promise.all(
      clients.map(async (c) => {
        for (let i = 0; i < 10; ) {
          await c.watch("counter");
          const v = Number(await c.get("counter"));
          const r = await c.multi().set("counter", v + 1).exec();
          if (r === null) conflicts++;
          else i++;
        }
      }),
    );
    assert.equal(await upstream.get("counter"), "50");
    // A WATCH broken by another client's write gives a null EXEC, and nothing is written.
    const a = client();
    await a.watch("w");
    await upstream.set("w", "theirs");
    assert.equal(await a.multi().set("w", "mine").exec(), null);
    assert.equal(await upstream.get("w"), "theirs");
    // A plain transaction's results.
    assert.deepEqual(await a.multi().set("t", "1").incr("t").get("t").exec(), [
      [null, "OK"],
      [null, 2],
      [null, "2"],
    ]);
    return `${conflicts} conflicts retried`;
  },

  async "pub/sub"() {
    const sub = client();
    const pub = client();
    const got = [];
    sub.on("message", (ch, msg) => got.push(`${ch}:${msg}`));
    sub.on("pmessage", (pat, ch, msg) => got.push(`${pat}|${ch}:${msg}`));
    assert.equal(await sub.subscribe("news", "sport"), 2);
    assert.equal(await sub.psubscribe("n*"), 3);
    for (let i = 0; i < 20; i++) await pub.publish("news", `m${i}`);
    assert.equal(await pub.publish("sport", "goal"), 1);
    await until("every message", async () => got.length === 41);
    const direct = got.filter((m) => m.startsWith("news:"));
    assert.deepEqual(direct, Array.from({ length: 20 }, (_, i) => `news:m${i}`), "in order");
    assert.ok(got.includes("sport:goal"));
    assert.equal(got.filter((m) => m.startsWith("n*|news:")).length, 20);
    const [, numsub] = await pub.pubsub("NUMSUB", "news");
    assert.equal(numsub, 1);
    await sub.unsubscribe("news", "sport");
    await sub.punsubscribe("n*");
    // Out of subscriber mode, the same connection runs commands again.
    assert.equal(await sub.ping(), "PONG");
  },

  async pipelines() {
    const c = client();
    const results = await c
      .pipeline()
      .set("p1", "a")
      .get("p1")
      .incr("p2")
      .lpush("pl", "x", "y")
      .lrange("pl", 0, -1)
      .hset("ph", "f", "v")
      .hgetall("ph")
      .exec();
    assert.deepEqual(results, [
      [null, "OK"],
      [null, "a"],
      [null, 1],
      [null, 2],
      [null, ["y", "x"]],
      [null, 1],
      [null, { f: "v" }],
    ]);
    // A long pipeline comes back whole and in order.
    const p = c.pipeline();
    for (let i = 0; i < 2000; i++) p.set(`k${i}`, `${i}`).get(`k${i}`);
    const long = await p.exec();
    for (let i = 0; i < 2000; i++) assert.equal(long[2 * i + 1][1], `${i}`);
    assert.equal(await upstream.get("k1999"), "1999");
  },

  async scripts() {
    const c = client();
    c.defineCommand("addTo", {
      numberOfKeys: 1,
      lua: "return redis.call('INCRBY', KEYS[1], ARGV[1])",
    });
    // The first call finds no script (NOSCRIPT) and ioredis sends EVAL; later ones EVALSHA.
    await upstream.script("FLUSH");
    assert.equal(await c.addTo("sc", 5), 5);
    assert.equal(await c.addTo("sc", 5), 10);
    assert.equal(await upstream.get("sc"), "10");
    const sha = await c.script("LOAD", "return ARGV[1]");
    assert.equal(await c.evalsha(sha, 0, "hi"), "hi");
    assert.deepEqual(await c.script("EXISTS", sha), [1]);
  },

  async "select db"() {
    const c = client({ db: 3 });
    assert.equal(await c.set("in3", "yes"), "OK");
    assert.equal(await c.get("in3"), "yes");
    const direct3 = new Redis({ port: upstreamPort, host: "127.0.0.1", db: 3 });
    opened.push(direct3);
    assert.equal(await direct3.get("in3"), "yes");
    assert.equal(await upstream.exists("in3"), 0, "not in database 0");
    // The same connection can go back to the configured database.
    assert.equal(await c.select(0), "OK");
    assert.equal(await c.get("in3"), null);
  },

  async "upstream commands"() {
    const c = client();
    await c.mset("l1", "ohmytext", "l2", "mynewtext");
    assert.equal(await c.call("LCS", "l1", "l2"), "mytext");
    assert.equal(await c.call("LCS", "l1", "l2", "LEN"), 6);
    assert.equal(await c.object("ENCODING", "l1"), "embstr");
    await c.set("sw", "db0");
    assert.equal(await c.call("SWAPDB", "0", "5"), "OK");
    assert.equal(await upstream.exists("sw"), 0);
    assert.equal(await c.call("SWAPDB", "0", "5"), "OK");
    assert.equal(await upstream.get("sw"), "db0");
  },
};

async function main() {
  for (const [name, run] of Object.entries(families)) {
    await upstream.flushall();
    const note = await run();
    console.log(`ok ${name}${note ? ` (${note})` : ""}`);
  }
}

main()
  .then(() => {
    for (const c of opened) c.disconnect();
  })
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
