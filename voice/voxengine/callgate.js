/*
 * callgate's shared VoxEngine code: the gateway's URL and secret, signing, delivery with
 * retries, and the vocabulary of call outcomes. Attach it to a routing rule *before*
 * inbound.js or robocall.js (the scenarios of one rule run in one space, in order).
 *
 * Every POST to the gateway is signed with the session's secret:
 *   X-Callgate-Timestamp: <unix seconds>
 *   X-Callgate-Signature: hex HMAC-SHA256(secret, "<timestamp>.<body>")
 * The URL and the secret come from the session's custom data (the routing rule's custom
 * data, or script_custom_data of StartScenarios), a JSON object of at most 200 bytes:
 *   {"url": "https://gw.example.com/webhooks/voximplant/vox1", "secret": "..."}
 * or, when the session has none, from CALLGATE_CONFIG (the same object) defined by a small
 * scenario of your own that the routing rule runs before these.
 */

// Well under the caller's patience for call.incoming; VoxEngine's own cap is 90 s.
var HTTP_TIMEOUT_SECONDS = 8;
// call.incoming is not retried: the caller is waiting, and a lost one still ends in call.missed.
var POST_ATTEMPTS = { "call.incoming": 1, default: 3 };
var RETRY_DELAY_MS = 1000;

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

// The session's gateway: its custom data, else CALLGATE_CONFIG; null when neither names one.
function loadConfig() {
  var config = parseConfig(VoxEngine.customData());
  if (config === null && typeof CALLGATE_CONFIG !== "undefined") {
    config = parseConfig(JSON.stringify(CALLGATE_CONFIG));
  }
  if (config === null) {
    Logger.write(
      'callgate: no gateway configured: set the custom data to {"url": "https://.../webhooks/voximplant/<provider>", "secret": "..."}',
    );
  }
  return config;
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

// How a call that failed before it was answered ended, in the words of Twilio's
// DialCallStatus, so the CRM sees one vocabulary whichever provider placed the call.
function failedStatus(code) {
  if (code === 486 || code === 600) return "busy";
  if (code === 408 || code === 480 || code === 487 || code === 603) return "no-answer";
  return "failed";
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
