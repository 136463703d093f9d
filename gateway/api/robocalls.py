"""Robocalls and jobs (api token), and the audio files providers fetch (no token: the
keys are unguessable)."""

from __future__ import annotations

import asyncio
import hashlib
import re

from aiohttp import hdrs, web

from config.jobs import JobKind
from config.lines import ProviderKind
from config.settings import Settings
from config.templates import UnknownField, render
from gateway.api import params
from gateway.api.queueing import Queued, Queueing, idempotency_key
from gateway.api.routing import Endpoint, Param, Scope
from gateway.appkeys import RENDERER, SETTINGS, STORE
from gateway.errors import Invalid, NotFound, UnknownReference
from gateway.media import MediaError, MediaFiles, any_address, check_mp3, download, is_public
from gateway.providers.registry import CALLING, unable
from gateway.store import Store
from voice.render import Renderer
from voice.robocall import RobocallRequest, Say
from voice.spoken import twilio_problem
from voice.tts import VoiceError, pick_voice

CACHE_FOREVER = "public, max-age=31536000, immutable"


async def _media_for(store: Store, settings: Settings, url: str) -> str:
    """The media key of ``url``'s MP3: fetched once (checked and validated), then cached.

    Cached per address policy: a link fetched while private addresses were allowed is
    fetched (and refused) again once they are not."""
    files = MediaFiles(settings.data_dir)
    policy = "any" if settings.media_allow_private else "public"
    digest = hashlib.sha256(f"{policy} {url}".encode()).hexdigest()
    cached = await store.jobs.media_for_url(digest)
    if cached is not None and files.path(cached) is not None:
        return cached
    try:
        data = await download(url, any_address if settings.media_allow_private else is_public)
        await asyncio.to_thread(check_mp3, data)
    except MediaError as exc:
        raise Invalid("play.url", f"play.url: {exc}", code="media_refused") from None
    key = await asyncio.to_thread(files.write, data)
    await store.jobs.remember_media(digest, key)
    return key


def _check_say(renderer: Renderer, say: Say, text: str, provider: ProviderKind) -> None:
    """422 unless ``text`` can be said as asked: words to say, and an engine and a voice
    for the language here (the synthesis itself runs in a worker), or, for the ``provider``
    engine, settings the provider can honour."""
    try:
        say.utterance(text)
    except VoiceError as exc:
        raise Invalid("say.text", f"say.text: {exc}") from None
    if say.engine == "provider":
        problem = twilio_problem(say.spoken(text)) if provider is ProviderKind.TWILIO else None
        if problem is not None:
            raise Invalid("say.voice", f"say.voice: {problem}")
        return
    engine = say.engine or renderer.offline_engine(say.language)
    if engine not in renderer.engines:
        raise Invalid("say.engine", f"say.engine: {engine} is not available here")
    try:
        pick_voice(engine, renderer.engines[engine].voices(), say.language, say.voice)
    except VoiceError as exc:
        field = "say.voice" if say.voice else "say.language"
        raise Invalid(field, f"{field}: {exc}") from None


async def queue_robocall(
    store: Store, settings: Settings, renderer: Renderer, body: RobocallRequest, *, key: str | None
) -> Queued:
    """Check and queue a robocall job, once per idempotency ``key``."""
    queueing = Queueing(store, body, key)
    replayed = await queueing.replayed()
    if replayed is not None:
        return replayed
    item = await queueing.item(body.item_id)
    line = await store.lines.get(body.line)
    if line is None or not line.voice:
        raise UnknownReference("line", f"line: {body.line} is not a voice line of this gateway")
    provider = await store.providers.get(line.provider)
    if provider is None:
        raise Invalid("line", f"line: its provider {line.provider} is not configured")
    refusal = unable(provider, CALLING)
    if refusal is not None:
        raise Invalid("line", f"line: its provider {line.provider} cannot place robocalls ({refusal})")
    text, media, engine = "", "", ""
    spoken: dict[str, str] = {}
    if body.say is not None:
        try:
            text = render(body.say.text, item.card.fields)
        except UnknownField as exc:
            raise Invalid("say.text", f"say.text: {exc}", code="unknown_field") from None
        # The request's engine, else the line's; the job keeps the choice.
        say = body.say.model_copy(update={"engine": body.say.engine or line.tts_engine})
        _check_say(renderer, say, text, provider.kind)
        engine = say.engine or ""
        if engine == "provider":
            # No render will name the engine and voice: the provider speaks with these.
            spoken = {"engine": engine, "voice": say.voice or ""}
    else:
        assert body.play is not None
        media = await _media_for(store, settings, body.play.url)
    fields = {"line": body.line, "provider": line.provider, "to": body.to or "", "media": media, "text": text}
    fields |= {"say_engine": engine, **spoken}
    return await queueing.queue(
        JobKind.ROBOCALL, body.item_id, fields, delay_seconds=body.delay_seconds, test=body.test
    )


async def create_robocall(request: web.Request, body: RobocallRequest) -> web.Response:
    app = request.app
    queued = await queue_robocall(app[STORE], app[SETTINGS], app[RENDERER], body, key=idempotency_key(request))
    return queued.response()


async def get_job(request: web.Request) -> web.Response:
    job_id = params.name(request, "id")
    job = await request.app[STORE].jobs.get(job_id)
    if job is None:
        raise NotFound(f"job {job_id}")
    return web.json_response(job.view(request.app[SETTINGS].base_url))


async def list_jobs(request: web.Request) -> web.Response:
    raw = request.query.get("item_id", "")
    if not raw:
        raise Invalid("item_id", "item_id is required", code="missing")
    item_id = params.item_id_value(raw, "item_id")
    jobs = await request.app[STORE].jobs.of_item(item_id)
    base_url = request.app[SETTINGS].base_url
    return web.json_response({"jobs": [job.view(base_url) for job in jobs]})


async def get_media(request: web.Request) -> web.StreamResponse:
    path = MediaFiles(request.app[SETTINGS].data_dir).path(request.match_info["key"])
    if path is None:
        raise NotFound("media")
    stat = path.stat()
    size = stat.st_size
    if _unsatisfiable(request, size, stat.st_mtime):
        # Answered here, not by FileResponse, whose 416 has no error body and is cacheable.
        raise web.HTTPRequestRangeNotSatisfiable(headers={hdrs.CONTENT_RANGE: f"bytes */{size}"})
    headers = {hdrs.CONTENT_TYPE: "audio/mpeg", hdrs.CACHE_CONTROL: CACHE_FOREVER}
    return web.FileResponse(path, headers=headers)


def _unsatisfiable(request: web.Request, size: int, mtime: float) -> bool:
    """Whether the request's Range, which FileResponse would follow (an If-Range older than
    the file voids it), is malformed or starts past the end of ``size`` bytes: a 416."""
    if_range = request.if_range
    if hdrs.RANGE not in request.headers or (if_range is not None and mtime > if_range.timestamp()):
        return False
    if _EMPTY_SUFFIX.fullmatch(request.headers[hdrs.RANGE]):
        return True  # the last 0 bytes: aiohttp reads it as the whole file
    try:
        start = request.http_range.start
    except ValueError:
        return True
    return start is not None and start >= size


_EMPTY_SUFFIX = re.compile(r"\s*bytes\s*=\s*-0+\s*", re.IGNORECASE)


_API = Scope.API
ENDPOINTS_ROBOCALLS = [
    Endpoint(
        "POST",
        "/v1/robocalls",
        create_robocall,
        "Queue a robocall (Idempotency-Key: the same key returns the same job)",
        _API,
        RobocallRequest,
        status=202,
        tag="jobs",
    ),
    Endpoint(
        "GET",
        "/v1/jobs/{id}",
        get_job,
        "A robocall or SMS job",
        _API,
        tag="jobs",
        path_params={"id": params.NAME_SCHEMA},
    ),
    Endpoint(
        "GET",
        "/v1/jobs",
        list_jobs,
        "An item's jobs, newest first (at most 100)",
        _API,
        query=(Param("item_id", "the item", required=True, schema=params.ITEM_ID_SCHEMA),),
        tag="jobs",
    ),
    Endpoint(
        "GET",
        "/media/{key}.mp3",
        get_media,
        "Audio a robocall plays (fetched or rendered); Range requests supported",
        tag="media",
    ),
]
