/*
 * callgate inbound-call scenario for Voximplant (VoxEngine).
 *
 * Attach it to the routing rule of the numbers callgate serves. For every inbound call it
 * asks the gateway which agents to ring, rings them all at once, bridges the first who
 * answers, and reports call.incoming / call.answered / call.missed / call.completed to the
 * gateway's URL, each signed with the shared secret:
 *   X-Callgate-Timestamp: <unix seconds>
 *   X-Callgate-Signature: hex HMAC-SHA256(secret, "<timestamp>.<body>")
 * The gateway answers call.incoming with {"forward_to": ["+34...", ...], "timeout": 20}.
 *
 * The URL and the secret are not in this file: they come from the session's custom data
 * (the routing rule's custom data, or script_custom_data of StartScenarios), a JSON object
 * of at most 200 bytes:
 *   {"url": "https://gw.example.com/webhooks/voximplant/vox1", "secret": "..."}
 * or, when the session has none, from CALLGATE_CONFIG (the same object) defined by a small
 * scenario of your own that the routing rule runs before this one. Without either the
 * scenario cannot reach the gateway: it logs why and hangs up.
 */

var DEFAULT_RING_SECONDS = 20;
// VoxEngine fails an unanswered outgoing leg after 60 s anyway (Failed 408).
var MAX_RING_SECONDS = 60;
// Well under the caller's patience for call.incoming; VoxEngine's own cap is 90 s.
var HTTP_TIMEOUT_SECONDS = 8;
// call.incoming is not retried: the caller is waiting, and a lost one still ends in call.missed.
var POST_ATTEMPTS = { "call.incoming": 1, default: 3 };
var RETRY_DELAY_MS = 1000;

// ---- Decision logic: plain functions, testable outside VoxEngine -----------------------

// The gateway's URL and secret from VoxEngine.customData(); null when they are missing.
function parseConfig(raw) {
  var data;
  try {
    data = JSON.parse(String(raw === undefined || raw === null ? "" : raw));
  } catch (err) {
    return null;
  }
  if (!data || typeof data !== "object") return null;
  if (typeof data.url !== "string" || !/^https?:\/\/\S+$/.test(data.url)) return null;
  if (typeof data.secret !== "string" || data.secret.length === 0) return null;
  return { url: data.url, secret: data.secret };
}

// Voximplant passes PSTN numbers without the "+", and the gateway finds lines by E.164.
// SIP and app identities (anything that is not 7-15 digits) go through untouched.
function toE164(raw) {
  var text = String(raw === undefined || raw === null ? "" : raw).trim();
  if (/^\+?[1-9][0-9]{6,14}$/.test(text)) {
    return text.charAt(0) === "+" ? text : "+" + text;
  }
  return text;
}

// Same words as Twilio's DialCallStatus, so the CRM sees one vocabulary for missed calls.
function missedStatus(code) {
  if (code === 486 || code === 600) return "busy";
  if (code === 408 || code === 480 || code === 487 || code === 603) return "no-answer";
  return "failed";
}

function parseRouting(result) {
  var routing = { forwardTo: [], timeout: DEFAULT_RING_SECONDS };
  if (!result || result.code < 200 || result.code >= 300 || !result.text) return routing;
  var data;
  try {
    data = JSON.parse(result.text);
  } catch (err) {
    return routing;
  }
  if (!data || typeof data !== "object") return routing;
  if (Array.isArray(data.forward_to)) {
    routing.forwardTo = data.forward_to.filter(function (n) {
      return typeof n === "string" && n.length > 0;
    });
  }
  if (typeof data.timeout === "number" && data.timeout > 0) {
    routing.timeout = Math.min(data.timeout, MAX_RING_SECONDS);
  }
  return routing;
}

function eventPayload(identity, kind, seq, nowMs, fields) {
  var payload = {
    event: kind,
    call_id: identity.callId,
    line: identity.line,
    customer: identity.customer,
    at: nowMs / 1000,
    seq: seq,
  };
  Object.keys(fields || {}).forEach(function (name) {
    if (fields[name] !== undefined) payload[name] = fields[name];
  });
  return payload;
}

// Escaping non-ASCII keeps the signed string and the posted bytes identical whatever
// encoding VoxEngine uses internally for Crypto and postData.
function asciiJson(value) {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, function (ch) {
    return "\\u" + ("0000" + ch.charCodeAt(0).toString(16)).slice(-4);
  });
}

var BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function base64Bytes(text) {
  var bytes = [];
  var bits = 0;
  var buffer = 0;
  for (var i = 0; i < text.length && text.charAt(i) !== "="; i++) {
    buffer = (buffer << 6) | BASE64.indexOf(text.charAt(i));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((buffer >> bits) & 0xff);
    }
  }
  return bytes;
}

// The VoxEngine reference types Crypto.hmac_sha256 as returning "string" without naming the
// encoding. Hex is expected; base64 and raw bytes are accepted too so that an encoding
// surprise cannot silently turn every event into a 403.
function hexDigest(digest) {
  if (/^[0-9a-fA-F]{64}$/.test(digest)) return digest.toLowerCase();
  var bytes;
  if (/^[A-Za-z0-9+/]{43}=$/.test(digest)) {
    bytes = base64Bytes(digest);
  } else {
    bytes = [];
    for (var i = 0; i < digest.length; i++) bytes.push(digest.charCodeAt(i) & 0xff);
  }
  return bytes
    .map(function (b) {
      return ("0" + b.toString(16)).slice(-2);
    })
    .join("");
}

function signedRequest(secret, body, nowMs) {
  var timestamp = String(Math.floor(nowMs / 1000));
  return {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "X-Callgate-Timestamp": timestamp,
      "X-Callgate-Signature": hexDigest(Crypto.hmac_sha256(secret, timestamp + "." + body)),
    },
    postData: body,
    timeout: HTTP_TIMEOUT_SECONDS,
  };
}

// code < 0 is VoxEngine's own network failure (DNS, connect, timeout); 5xx and 429 are
// transient. Retrying is safe: the gateway dedupes on call_id + event + seq. Code 0 means
// VoxEngine's own HTTP limits were hit: retrying at once only hits them again.
function shouldRetry(code) {
  return code < 0 || code === 429 || code >= 500;
}

// ---- Plumbing ---------------------------------------------------------------------------

function sleep(ms) {
  return new Promise(function (resolve) {
    setTimeout(resolve, ms);
  });
}

async function deliver(config, kind, body) {
  var attempts = POST_ATTEMPTS[kind] || POST_ATTEMPTS.default;
  var result = null;
  for (var attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await sleep(RETRY_DELAY_MS * (attempt - 1));
    try {
      // Re-signed on every attempt so a retry never carries a stale timestamp.
      result = await Net.httpRequestAsync(config.url, signedRequest(config.secret, body, Date.now()));
    } catch (err) {
      result = { code: -1, error: String(err) };
    }
    if (!shouldRetry(result.code)) break;
  }
  Logger.write("callgate: " + kind + " -> " + result.code);
  return result;
}

// Events of one call leave strictly in order, each with the next seq.
function createReporter(config, identity) {
  var seq = 0;
  var queue = Promise.resolve(null);
  return {
    send: function (kind, fields) {
      seq += 1;
      var body = asciiJson(eventPayload(identity, kind, seq, Date.now(), fields));
      queue = queue.then(function () {
        return deliver(config, kind, body);
      });
      return queue;
    },
    drained: function () {
      return queue;
    },
  };
}

function handleInbound(e) {
  var inbound = e.call;
  var config = parseConfig(VoxEngine.customData());
  if (config === null && typeof CALLGATE_CONFIG !== "undefined") {
    config = parseConfig(JSON.stringify(CALLGATE_CONFIG));
  }
  if (config === null) {
    Logger.write(
      'callgate: no gateway configured: set the custom data to {"url": "https://.../webhooks/voximplant/<provider>", "secret": "..."}',
    );
    inbound.hangup();
    VoxEngine.terminate();
    return;
  }
  var reporter = createReporter(config, {
    callId: inbound.id(),
    line: toE164(e.destination),
    customer: toE164(e.callerid),
  });
  // routing -> ringing -> bridged -> done; every handler checks it because leg events keep
  // arriving after the outcome is decided (including the ones our own hangups cause).
  var phase = "routing";
  var legs = [];
  var pending = 0;
  var ringTimer = null;
  var ended = [];

  // Hanging up a call that already ended is at best noise in the session log.
  function hangUp(call) {
    if (ended.indexOf(call) === -1) {
      ended.push(call);
      call.hangup();
    }
  }

  function markEnded(call) {
    if (ended.indexOf(call) === -1) ended.push(call);
  }

  function finish(kind, fields) {
    phase = "done";
    if (ringTimer !== null) clearTimeout(ringTimer);
    reporter.send(kind, fields);
    legs.concat([inbound]).forEach(hangUp);
    reporter.drained().then(function () {
      VoxEngine.terminate();
    });
  }

  function missed(code, status) {
    finish("call.missed", { status: status, code: code });
  }

  function ring(routing) {
    phase = "ringing";
    routing.forwardTo.forEach(function (number) {
      var leg = VoxEngine.callPSTN(number, e.destination);
      legs.push(leg);
      pending += 1;
      leg.addEventListener(CallEvents.Connected, function () {
        if (phase !== "ringing") return;
        phase = "bridged";
        clearTimeout(ringTimer);
        inbound.answer();
        VoxEngine.sendMediaBetween(inbound, leg);
        legs.forEach(function (other) {
          if (other !== leg) hangUp(other);
        });
        legs = [leg];
        reporter.send("call.answered", { status: "in-progress" });
      });
      leg.addEventListener(CallEvents.Failed, function (ev) {
        markEnded(leg);
        if (phase !== "ringing") return;
        pending -= 1;
        // The failure that ends the attempt is the one reported.
        if (pending === 0) missed(ev.code, missedStatus(ev.code));
      });
      leg.addEventListener(CallEvents.Disconnected, function (ev) {
        markEnded(leg);
        if (phase === "bridged" && legs[0] === leg) {
          finish("call.completed", { status: "completed", duration: Math.round(ev.duration || 0) });
        }
      });
    });
    ringTimer = setTimeout(function () {
      if (phase === "ringing") missed(408, "no-answer");
    }, routing.timeout * 1000);
  }

  inbound.addEventListener(CallEvents.Disconnected, function (ev) {
    markEnded(inbound);
    if (phase === "routing" || phase === "ringing") {
      missed(487, "canceled");
    } else if (phase === "bridged") {
      finish("call.completed", { status: "completed", duration: Math.round(ev.duration || 0) });
    }
  });

  reporter.send("call.incoming", { status: "ringing" }).then(function (result) {
    if (phase !== "routing") return;
    var routing = parseRouting(result);
    if (routing.forwardTo.length === 0) {
      missed(undefined, "failed");
    } else {
      ring(routing);
    }
  });
}

VoxEngine.addEventListener(AppEvents.CallAlerting, handleInbound);
