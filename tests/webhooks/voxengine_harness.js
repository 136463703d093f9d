// Runs a VoxEngine scenario under node with mocked VoxEngine globals.
//
//   node voxengine_harness.js <callgate.js,scenario.js> '<spec JSON>'
//
// The scenarios run in order in one context, as VoxEngine runs a routing rule's scenarios.
// spec: {url, secret, crypto: "hex"|"base64"|"binary", callId, destination, callerid,
//        customData: the session's custom data (default: {"url": url, "secret": secret} as JSON),
//        globalConfig: CALLGATE_CONFIG as a companion scenario would define it,
//        gateway: {code, text}          the answer to call.incoming (default 200 "{}"),
//        failFirst: {"<event>": code}   first delivery of that event gets this code,
//        agents: {"<number>": {fail: code, after: ms} | {connect: ms, hangup: ms, duration: s}},
//        callerHangup: ms, timeScale: n (scenario timers run n times faster),
//        started: {sessionId}            start the session as StartScenarios does (robocall.js)
//                                        instead of with an inbound call,
//        script: {code, text}            the answer to robocall.start,
//        agents[n] also: {ring: ms} rings first, {duration: s} on our own hangup, playbackMs}
// Prints one JSON object per line: {"type": "request"|"action"|"terminated"|"error", ...}.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const vm = require("vm");

const [scenarioPaths, specJson] = process.argv.slice(2);
const spec = JSON.parse(specJson);
const timeScale = spec.timeScale || 1;

function emit(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

function fail(message) {
  emit({ type: "error", message: String(message) });
  process.exit(2);
}

process.on("unhandledRejection", (err) => fail("unhandled rejection: " + (err && err.stack)));
setTimeout(() => fail("scenario never called VoxEngine.terminate()"), 10000).unref();

class MockCall {
  constructor(id) {
    this._id = id;
    this.listeners = {};
    this.ended = false;
    this.duration = 0;
  }
  id() {
    return this._id;
  }
  addEventListener(event, handler) {
    (this.listeners[event] = this.listeners[event] || []).push(handler);
  }
  fire(event, fields) {
    if (event === "Call.Failed" || event === "Call.Disconnected") {
      if (this.ended) return;
      this.ended = true;
    }
    for (const handler of this.listeners[event] || []) {
      handler(Object.assign({ call: this, name: event, id: this._id }, fields));
    }
  }
  answer() {
    emit({ type: "action", action: "answer", call: this._id });
  }
  hangup() {
    emit({ type: "action", action: "hangup", call: this._id, ended: this.ended });
    // VoxEngine reports our own hangup as a Disconnected; the scenario must ignore it.
    setTimeout(() => this.fire("Call.Disconnected", { duration: this.duration, internalCode: 200, reason: "hangup" }), 1);
  }
  startPlayback(url) {
    emit({ type: "action", action: "startPlayback", call: this._id, url });
    setTimeout(() => this.fire("Call.PlaybackFinished", {}), spec.playbackMs || 5);
  }
  say(text, options) {
    emit({ type: "action", action: "say", call: this._id, text, options });
    setTimeout(() => this.fire("Call.PlaybackFinished", {}), spec.playbackMs || 5);
  }
}

function scheduleAgent(leg, behaviour) {
  leg.duration = behaviour.duration || 0;
  if (behaviour.ring !== undefined) setTimeout(() => leg.fire("Call.Ringing", {}), behaviour.ring);
  if (behaviour.fail !== undefined) {
    setTimeout(() => leg.fire("Call.Failed", { code: behaviour.fail, reason: "scripted" }), behaviour.after || 5);
  } else if (behaviour.connect !== undefined) {
    setTimeout(() => {
      if (leg.ended) return;
      leg.fire("Call.Connected", { headers: {} });
      if (behaviour.hangup !== undefined) {
        setTimeout(
          () => leg.fire("Call.Disconnected", { duration: behaviour.duration, internalCode: 200, reason: "bye" }),
          behaviour.hangup,
        );
      }
    }, behaviour.connect);
  }
}

const failedOnce = new Set();
const handlers = {};
const inbound = new MockCall(spec.callId || "inbound-1");
let legCount = 0;

const sandbox = {
  AppEvents: { CallAlerting: "Application.CallAlerting", Started: "Application.Started" },
  CallEvents: {
    Connected: "Call.Connected",
    Failed: "Call.Failed",
    Disconnected: "Call.Disconnected",
    Ringing: "Call.Ringing",
    PlaybackFinished: "Call.PlaybackFinished",
  },
  VoiceList: {
    Amazon: { en_US_Joanna: "amazon:en_US_Joanna", es_ES_Lucia: "amazon:es_ES_Lucia", es_MX_Mia: "amazon:es_MX_Mia" },
    Default: { ru_RU_Female: "default:ru_RU_Female" },
  },
  VoxEngine: {
    addEventListener(event, handler) {
      handlers[event] = handler;
    },
    callPSTN(number, callerid) {
      legCount += 1;
      const leg = new MockCall("leg-" + legCount);
      emit({ type: "action", action: "callPSTN", call: leg.id(), number, callerid });
      scheduleAgent(leg, (spec.agents || {})[number] || {});
      return leg;
    },
    sendMediaBetween(a, b) {
      emit({ type: "action", action: "sendMediaBetween", calls: [a.id(), b.id()] });
    },
    customData() {
      return spec.customData !== undefined ? spec.customData : JSON.stringify({ url: spec.url, secret: spec.secret });
    },
    terminate() {
      emit({ type: "terminated" });
      // Leave a moment for stray events to surface as errors before exiting.
      setTimeout(() => process.exit(0), 20);
    },
  },
  Net: {
    httpRequestAsync(url, options) {
      emit({ type: "request", url, method: options.method, headers: options.headers, body: options.postData });
      const kind = JSON.parse(options.postData).event;
      let result = { code: 200, text: "{}", headers: [] };
      if (spec.failFirst && spec.failFirst[kind] !== undefined && !failedOnce.has(kind)) {
        failedOnce.add(kind);
        result = { code: spec.failFirst[kind], text: "" };
      } else if (kind === "call.incoming" && spec.gateway) {
        result = { code: spec.gateway.code, text: spec.gateway.text };
      } else if (kind === "robocall.start" && spec.script) {
        result = { code: spec.script.code, text: spec.script.text };
      }
      return new Promise((resolve) => setTimeout(() => resolve(result), 2));
    },
  },
  Crypto: {
    hmac_sha256(key, data) {
      const mac = crypto.createHmac("sha256", Buffer.from(key, "utf8")).update(Buffer.from(data, "utf8"));
      return mac.digest({ hex: "hex", base64: "base64", binary: "latin1" }[spec.crypto || "hex"]);
    },
  },
  Logger: {
    write(message) {
      emit({ type: "log", message: String(message) });
    },
  },
  setTimeout: (fn, ms) => setTimeout(fn, ms / timeScale),
  clearTimeout: (timer) => clearTimeout(timer),
};

vm.createContext(sandbox);
for (const path of scenarioPaths.split(",")) {
  vm.runInContext(fs.readFileSync(path, "utf8"), sandbox, { filename: path });
}
sandbox.RETRY_DELAY_MS = 10;
if (spec.globalConfig !== undefined) sandbox.CALLGATE_CONFIG = spec.globalConfig;

if (spec.started !== undefined) {
  handlers[sandbox.AppEvents.Started](Object.assign({ name: "Application.Started" }, spec.started));
} else {
  handlers[sandbox.AppEvents.CallAlerting]({
    name: "Application.CallAlerting",
    call: inbound,
    callerid: spec.callerid,
    destination: spec.destination,
    headers: {},
  });
}
if (spec.callerHangup !== undefined) {
  setTimeout(() => inbound.fire("Call.Disconnected", { duration: 0, internalCode: 487, reason: "cancel" }), spec.callerHangup);
}
