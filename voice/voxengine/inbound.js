/*
 * callgate inbound-call scenario for Voximplant (VoxEngine).
 *
 * Attach callgate.js and then this file to the routing rule of the numbers callgate serves
 * (callgate.js says where the gateway's URL and secret come from). For every inbound call
 * it asks the gateway which agents to ring, rings them all at once, bridges the first who
 * answers, and reports call.incoming / call.answered / call.missed / call.completed to the
 * gateway, each signed (see callgate.js). The gateway answers call.incoming with
 * {"forward_to": ["+34...", ...], "timeout": 20}. Without a configured gateway the scenario
 * cannot reach it: it logs why and hangs up.
 */

var DEFAULT_RING_SECONDS = 20;
// VoxEngine fails an unanswered outgoing leg after 60 s anyway (Failed 408).
var MAX_RING_SECONDS = 60;

// ---- Decision logic: plain functions, testable outside VoxEngine -----------------------

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

// ---- Plumbing ---------------------------------------------------------------------------

function handleInbound(e) {
  var inbound = e.call;
  var config = loadConfig();
  if (config === null) {
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
        if (pending === 0) missed(ev.code, failedStatus(ev.code));
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
