"""Robocalls and jobs (api token), and the audio files providers fetch (no token: the
keys are unguessable)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time

from aiohttp import hdrs, web

from config.jobs import JobKind, JobStatus
from config.templates import UnknownField, render
from gateway.api import params
from gateway.api.routing import Endpoint, Param, Scope
from gateway.appkeys import RENDERER, SETTINGS, STORE
from gateway.errors import ApiError, Invalid, NotFound, UnknownReference
from gateway.media import MediaError, MediaFiles, any_address, check_mp3, download, is_public
from gateway.providers.registry import CALLING
from gateway.store.items import now_iso, timeline_entry
from voice.render import Renderer
from voice.robocall import RobocallRequest, Say
from voice.tts import VoiceError, pick_voice

IDEMPOTENCY_HEADER = "Idempotency-Key"
CACHE_FOREVER = "public, max-age=31536000, immutable"


async def _accepted(request: web.Request, job_id: str) -> web.Response:
    job = await request.app[STORE].jobs.get(job_id)
    status = job.status if job is not None else JobStatus.QUEUED
    return web.json_response({"id": job_id, "status": status.value}, status=202)


def _conflict() -> ApiError:
    return ApiError(409, "idempotency_conflict", f"this {IDEMPOTENCY_HEADER} was used with a different body")


async def _media_for(request: web.Request, url: str) -> str:
    """The media key of ``url``'s MP3: fetched once (checked and validated), then cached."""
    store, settings = request.app[STORE], request.app[SETTINGS]
    files = MediaFiles(settings.data_dir)
    digest = hashlib.sha256(url.encode()).hexdigest()
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


def _check_say(renderer: Renderer, say: Say, text: str) -> None:
    """422 unless the renderer can say ``text`` as asked: words to say, an engine and a
    voice for the language (the synthesis itself runs in a worker)."""
    try:
        say.utterance(text)
    except VoiceError as exc:
        raise Invalid("say.text", f"say.text: {exc}") from None
    engine = say.engine or renderer.offline_engine(say.language)
    if engine not in renderer.engines:
        raise Invalid("say.engine", f"say.engine: {engine} is not available here")
    try:
        pick_voice(engine, renderer.engines[engine].voices(), say.language, say.voice)
    except VoiceError as exc:
        field = "say.voice" if say.voice else "say.language"
        raise Invalid(field, f"{field}: {exc}") from None


async def create_robocall(request: web.Request, body: RobocallRequest) -> web.Response:
    store = request.app[STORE]
    idempotency_key = params.header_token(request, IDEMPOTENCY_HEADER)
    body_hash = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    if idempotency_key is not None:
        existing = await store.jobs.existing(idempotency_key)
        if existing is not None:
            if existing[1] != body_hash:
                raise _conflict()
            return await _accepted(request, existing[0])
    item = await store.items.get(body.item_id)
    if item is None:
        raise UnknownReference("item_id", f"item_id: no item {body.item_id!r}")
    line = await store.lines.get(body.line)
    if line is None or not line.voice:
        raise UnknownReference("line", f"line: {body.line} is not a voice line of this gateway")
    provider = await store.providers.get(line.provider)
    if provider is None or provider.kind not in CALLING:
        kinds = ", ".join(sorted(CALLING))
        raise Invalid("line", f"line: its provider {line.provider} cannot place robocalls (supported: {kinds})")
    text, media = "", ""
    if body.say is not None:
        try:
            text = render(body.say.text, item.card.fields)
        except UnknownField as exc:
            raise Invalid("say.text", f"say.text: {exc}", code="unknown_field") from None
        _check_say(request.app[RENDERER], body.say, text)
    else:
        assert body.play is not None
        media = await _media_for(request, body.play.url)

    job_id = "job_" + secrets.token_hex(8)
    created = time.time()
    stamp = now_iso(created)
    fields = {
        "id": job_id,
        "kind": JobKind.ROBOCALL.value,
        "status": JobStatus.QUEUED.value,
        "item_id": body.item_id,
        "line": body.line,
        "provider": line.provider,
        "to": body.to or "",
        "test": "1" if body.test else "",
        "media": media,
        "text": text,
        "request": body.model_dump_json(),
        "dial": "1",
        "tries": "0",
        "created_at": stamp,
        "updated_at": stamp,
    }
    data = {"job_id": job_id, "kind": JobKind.ROBOCALL.value, "status": "queued", "test": body.test}
    outcome = await store.jobs.create(
        fields,
        idempotency_key=idempotency_key,
        body_hash=body_hash,
        created=created,
        due=created + body.delay_seconds if body.delay_seconds else 0,
        entry=timeline_entry("job.updated", data, created),
    )
    if not outcome.same_body:
        raise _conflict()
    return await _accepted(request, outcome.job_id)


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
    headers = {hdrs.CONTENT_TYPE: "audio/mpeg", hdrs.CACHE_CONTROL: CACHE_FOREVER}
    return web.FileResponse(path, headers=headers)


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
