"""The SSRF guard on play.url re-checks every redirect hop: a link on an allowed host that
redirects to a loopback, private or metadata address (or a name resolving to one) is
refused before anything is fetched from there.

127.0.0.2 stands in for a public host (the only one the policy allows), so the first hop is
fetched and the refusal is the redirect's."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.media import Address, MediaError, download, is_public
from tests.media import media_server

STAND_IN = ipaddress.ip_address("127.0.0.2")


def stand_in_is_public(address: Address) -> bool:
    return address == STAND_IN or is_public(address)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/ok.mp3",
        "http://localhost:{port}/ok.mp3",
        "http://10.1.2.3/ok.mp3",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(target: str) -> None:
    # The target server listens on 127.0.0.1: were the hop not checked, the fetch would succeed.
    target_server = await media_server()
    url = target.format(port=target_server.port)
    server = await media_server(redirect_to=url, host=str(STAND_IN))
    try:
        assert len(await download(str(server.make_url("/ok.mp3")), stand_in_is_public)) > 0
        with pytest.raises(MediaError, match="private or local address"):
            await download(str(server.make_url("/redirect.mp3")), stand_in_is_public)
    finally:
        await server.close()
        await target_server.close()
