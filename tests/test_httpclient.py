"""The hub's shared HTTP client: requests spread over small pools, connections reused, respx still works."""

from __future__ import annotations

import asyncio

import httpx
import respx

from cdp_hub.httpclient import ShardedTransport, shared_client


async def test_requests_spread_over_pools_and_reuse_connections() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(0.01)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = shared_client(max_connections=16, per_shard=4)
    assert isinstance(client._transport, ShardedTransport) and client._transport.max_connections == 16
    try:
        for _ in range(3):
            answers = await asyncio.gather(*(client.post(f"http://127.0.0.1:{port}/x", content=b"{}")
                                             for _ in range(64)))
            assert all(a.status_code == 200 and a.text == "ok" for a in answers)
        assert 4 <= connections <= 16  # several pools used, never more than the limit, reused across rounds
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_respx_mocks_requests_through_the_sharded_transport() -> None:
    client = shared_client(max_connections=8, per_shard=2)
    try:
        with respx.mock(assert_all_called=True) as mock:
            route = mock.post("https://sms.example.ru/send").mock(return_value=httpx.Response(202))
            for _ in range(5):
                assert (await client.post("https://sms.example.ru/send", json={})).status_code == 202
            assert route.call_count == 5
    finally:
        await client.aclose()


def test_every_pool_shares_one_tls_context_that_verifies_certificates() -> None:
    import ssl

    from cdp_hub.httpclient import default_tls_context

    transport = shared_client(max_connections=32, per_shard=8)._transport
    assert isinstance(transport, ShardedTransport)
    contexts = {id(pool._pool._ssl_context) for pool in transport._pools}
    assert contexts == {id(default_tls_context())}
    assert default_tls_context().verify_mode == ssl.CERT_REQUIRED and default_tls_context().check_hostname
