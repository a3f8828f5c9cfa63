"""The server processes' listening sockets (services/api/server.py, process_sockets)."""

from __future__ import annotations

import socket

import pytest

from services.api import server


def _close(slots: list[list[socket.socket]]) -> None:
    for sock in {sock for slot in slots for sock in slot}:
        sock.close()


@pytest.mark.skipif(not server.BALANCED_ACCEPT, reason="SO_REUSEPORT balances on Linux only")
def test_each_process_gets_its_own_sockets_on_the_same_ports() -> None:
    slots = server.process_sockets("127.0.0.1", [0, 0], 3)
    try:
        assert len(slots) == 3
        # Distinct sockets, each bound with SO_REUSEPORT, all on the ports the first was given.
        assert len({sock.fileno() for slot in slots for sock in slot}) == 6
        for index in (0, 1):
            ports = {slot[index].getsockname()[1] for slot in slots}
            assert len(ports) == 1
            assert all(
                slot[index].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for slot in slots
            )
        assert slots[0][0].getsockname()[1] != slots[0][1].getsockname()[1]
    finally:
        _close(slots)


def test_where_the_option_is_refused_the_processes_share_one_socket_per_port(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A sandbox that refuses SO_REUSEPORT: setsockopt with an option it does not know fails
    # with ENOPROTOOPT, as a refusal would.
    monkeypatch.setattr(server, "BALANCED_ACCEPT", True)
    monkeypatch.setattr(socket, "SO_REUSEPORT", 0x7FFF, raising=False)
    slots = server.process_sockets("127.0.0.1", [0, 0], 2)
    try:
        assert slots[0] is slots[1]
        assert len(slots[0]) == 2
        assert "SO_REUSEPORT refused" in caplog.text
    finally:
        _close(slots)
