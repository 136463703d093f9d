/*
 * callgate robocall scenario for Voximplant (VoxEngine).
 *
 * Attach callgate.js and then this file to a routing rule of its own (the provider's
 * rule_id); callgate starts one session per dial with StartScenarios, its custom data naming
 * the gateway's URL for this dial and the dial's own secret (see callgate.js).
 *
 * The session asks the gateway for the dial's script (robocall.start, with its session id):
 *   {"to": "+34600111222", "caller_id": "+34910000001",
 *    "play": "https://.../media/<key>.mp3"}                       an MP3 to play, or
 *    "say": {"text": "...", "language": "es-ES", "voice": "Amazon.es_ES_Lucia",
 *            "ttsOptions": {"rate": "fast", "volume": "+3dB"}}    text to speak.
 * A refusal (another session has the dial, or it is over) ends the session without dialling.
 * Then it dials, plays or says once the call is answered, hangs up, and reports
 * call.outgoing (ringing), call.answered and call.completed (completed with its duration,
 * or no-answer / busy / failed with the SIP code), each signed and retried as callgate.js does.
 */

// ---- Decision logic: plain functions, testable outside VoxEngine -----------------------

// The dial's script from the gateway's answer to robocall.start; null when there is none.
function parseScript(result) {
  if (!result || result.code !== 200 || !result.text) return null;
  var data;
  try {
    data = JSON.parse(result.text);
  } catch (err) {
    return null;
  }
  if (!data || typeof data !== "object") return null;
  if (typeof data.to !== "string" || typeof data.caller_id !== "string") return null;
  var script = { to: data.to, callerId: data.caller_id, play: null, say: null };
  if (typeof data.play === "string" && /^https?:\/\/\S+$/.test(data.play)) {
    script.play = data.play;
  } else if (data.say && typeof data.say === "object" && typeof data.say.text === "string" && data.say.text) {
    script.say = data.say;
  } else {
    return null;
  }
  return script;
}

// callPSTN takes numbers in international format without the "+".
function digits(number) {
  return String(number).replace(/^\+/, "");
}

// A voice by its VoiceList path ("Amazon.es_ES_Lucia"), else the first voice of the
// language ("es-ES" looks for es_ES_*, "es" for es_*) among Amazon's, then Google's, then the
// free default ones; undefined leaves VoxEngine's own default.
function pickVoice(voices, say) {
  if (typeof say.voice === "string" && say.voice) {
    var node = voices;
    say.voice.split(".").forEach(function (part) {
      node = node && typeof node === "object" ? node[part] : undefined;
    });
    if (node !== undefined) return node;
  }
  if (typeof say.language !== "string" || !say.language) return undefined;
  var prefix = say.language.replace("-", "_") + "_";
  var families = ["Amazon", "Google", "Default"];
  for (var i = 0; i < families.length; i++) {
    var family = voices[families[i]] || {};
    var names = Object.keys(family).filter(function (name) {
      return name.indexOf(prefix) === 0;
    });
    if (names.length > 0) return family[names[0]];
  }
  return undefined;
}

function sayOptions(voices, say) {
  var options = {};
  var voice = pickVoice(voices, say);
  if (voice !== undefined) options.voice = voice;
  if (say.ttsOptions && typeof say.ttsOptions === "object") options.ttsOptions = say.ttsOptions;
  return options;
}

// ---- Plumbing ---------------------------------------------------------------------------

function placeCall(script, reporter) {
  var call = VoxEngine.callPSTN(digits(script.to), digits(script.callerId));
  // dialing -> ringing -> answered -> done; VoxEngine reports our own hangup as a
  // Disconnected too, and the outcome is reported once.
  var phase = "dialing";

  function finish(fields) {
    if (phase === "done") return;
    phase = "done";
    reporter.send("call.completed", fields);
    reporter.drained().then(function () {
      VoxEngine.terminate();
    });
  }

  call.addEventListener(CallEvents.Ringing, function () {
    if (phase !== "dialing") return;
    phase = "ringing";
    reporter.send("call.outgoing", { status: "ringing" });
  });
  call.addEventListener(CallEvents.Connected, function () {
    if (phase === "done") return;
    phase = "answered";
    reporter.send("call.answered", { status: "in-progress" });
    if (script.play !== null) {
      call.startPlayback(script.play);
    } else {
      call.say(script.say.text, sayOptions(VoiceList, script.say));
    }
  });
  call.addEventListener(CallEvents.PlaybackFinished, function () {
    if (phase === "answered") call.hangup();
  });
  call.addEventListener(CallEvents.Failed, function (ev) {
    finish({ status: failedStatus(ev.code), code: ev.code });
  });
  call.addEventListener(CallEvents.Disconnected, function (ev) {
    finish({ status: "completed", duration: Math.round(ev.duration || 0) });
  });
}

function handleStarted(e) {
  var config = loadConfig();
  if (config === null) {
    VoxEngine.terminate();
    return;
  }
  // The session id is what StartScenarios returned as call_session_history_id: the gateway
  // knows the call by it.
  var identity = { callId: String(e.sessionId !== undefined ? e.sessionId : e.sessionID) };
  var reporter = createReporter(config, identity);
  reporter.send("robocall.start", {}).then(function (result) {
    var script = parseScript(result);
    if (script === null) {
      Logger.write("callgate: no call to place (the gateway answered " + (result && result.code) + ")");
      VoxEngine.terminate();
      return;
    }
    identity.line = script.callerId;
    identity.customer = script.to;
    placeCall(script, reporter);
  });
}

VoxEngine.addEventListener(AppEvents.Started, handleStarted);
