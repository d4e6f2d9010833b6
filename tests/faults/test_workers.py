"""`[gateway] processes = 2`: two worker processes behind one `gateway run`.

Mail, texts and opt-outs through both workers, each copy delivered once; /metrics adds up
both workers whichever answers; a worker that dies is replaced and its spool delivered;
fewer processes after a restart leave nothing queued behind; SIGTERM drains every worker;
and two gateways can never share one spool."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import aiohttp
import pytest
from gwprocess import ADMIN, SMS_KEY, GatewayProcess, seed, send_mail
from gwtest import Sink, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TWO = {"gateway_extra": "processes = 2"}


def ids(sink: Sink) -> Counter:
    return Counter(str(email.message_from_bytes(d, policy=email.policy.compat32)["Message-ID"])
                   for _, _, d in sink.messages)


async def send(gw: GatewayProcess, first: int, count: int, connections: int) -> list[str]:
    return await send_mail(gw.smtp_port, first, count, connections, prefix="w")


def worker_pids(gw: GatewayProcess, expect: int = 0, timeout: float = 15.0) -> list[int]:
    """The workers' pids, from the supervisor's log; waiting until there are `expect` of
    them (the listeners answer as soon as the supervisor binds them, before the workers
    it starts one after another are all up)."""
    deadline = time.monotonic() + timeout
    while True:
        started = re.findall(r"event=worker_started worker=\d+ pid=(\d+)", gw.log_text())
        pids = [int(p) for p in started if os.path.exists(f"/proc/{p}")]
        if len(pids) >= expect or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


async def metric(gw: GatewayProcess, http: aiohttp.ClientSession, line_start: str) -> float:
    async with http.get(f"{gw.url}/metrics", headers=ADMIN) as resp:
        assert resp.status == 200
        text = await resp.text()
    found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith(line_start)]
    return sum(found)


async def test_two_workers_share_the_load_and_deliver_each_copy_once(tmp_path, sink):
    gw = GatewayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}?tls=none", over=TWO)
    phones = [f"+4474009{i:05d}" for i in range(20)]
    seed(gw.data_dir, emails=[f"r{i}@example.com" for i in range(200)], phones=phones)
    await asyncio.to_thread(gw.start)
    try:
        assert len(worker_pids(gw, expect=2)) == 2
        accepted = await send(gw, 0, 200, 20)
        async with aiohttp.ClientSession() as http:
            for number in phones:
                async with http.post(f"{gw.url}/api/v1/sms", headers=SMS_KEY,
                                     json={"to": number, "body": "Spring sale"}) as resp:
                    assert resp.status == 202, await resp.text()
            await sink.wait_for(200, timeout=30)
            # Every scrape, whichever worker answers it, counts both workers' decisions.
            for _ in range(6):
                assert await metric(gw, http, 'gateway_decisions_total{channel="email"') == 200
                assert await metric(gw, http, 'gateway_decisions_total{channel="sms"') == 20
                assert await metric(gw, http, "gateway_delivery_attempts_total") == 200
            async with http.get(f"{gw.url}/status.json", headers=ADMIN) as resp:
                assert (await resp.json())["spool"]["depth"] == 0
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(gw.terminate) == 0
    finally:
        gw.kill()
    assert sorted(ids(sink)) == sorted(accepted) and max(ids(sink).values()) == 1
    log = gw.log_text()
    assert "worker=0 event=accepted" in log and "worker=1 event=accepted" in log, \
        "twenty connections all went to one worker"
    assert (gw.data_dir / "spool-1.db").exists()
    assert len(gw.outbox.read_text().splitlines()) == 20


async def test_a_dead_worker_is_replaced_and_delivers_what_it_had_spooled(tmp_path, sink):
    await sink.stop()  # upstream down: what the workers accept stays spooled
    gw = GatewayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}?tls=none", over=TWO)
    seed(gw.data_dir, emails=[f"r{i}@example.com" for i in range(100)])
    await asyncio.to_thread(gw.start)
    try:
        accepted = await send(gw, 0, 100, 20)
        victim = worker_pids(gw, expect=2)[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while len(worker_pids(gw)) < 2 or victim in worker_pids(gw):
            assert time.monotonic() < deadline, f"no new worker:\n{gw.log_text()[-2000:]}"
            await asyncio.sleep(0.1)
        assert "event=worker_died" in gw.log_text()
        await sink.start()
        await sink.wait_for(100, timeout=40)
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(gw.terminate) == 0
    finally:
        gw.kill()
        await sink.stop()
    assert sorted(ids(sink)) == sorted(accepted) and max(ids(sink).values()) == 1


async def test_fewer_processes_after_a_restart_leave_nothing_queued(tmp_path, sink):
    await sink.stop()
    gw = GatewayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}?tls=none", over=TWO)
    seed(gw.data_dir, emails=[f"r{i}@example.com" for i in range(100)])
    await asyncio.to_thread(gw.start)
    try:
        accepted = await send(gw, 0, 100, 20)
        assert await asyncio.to_thread(gw.terminate) == 0
        assert (gw.data_dir / "spool-1.db").exists()
        # The same data_dir with one process: worker 0 takes over spool-1.db.
        gw.config.write_text(gw.config.read_text().replace("processes = 2", "processes = 1"))
        await sink.start()
        await asyncio.to_thread(gw.start)
        await sink.wait_for(100, timeout=40)
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(gw.terminate) == 0
    finally:
        gw.kill()
        await sink.stop()
    assert sorted(ids(sink)) == sorted(accepted) and max(ids(sink).values()) == 1
    assert not (gw.data_dir / "spool-1.db").exists()
    assert "event=spool_adopted from=spool-1.db" in gw.log_text()


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_second_gateway_on_the_same_data_dir_refuses_to_start(tmp_path, processes):
    first = GatewayProcess(tmp_path, f"smtp://127.0.0.1:{free_port()}?tls=none",
                           over={"gateway_extra": f"processes = {processes}"})
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = GatewayProcess(second_dir, first.upstream,
                            over={"data_dir": str(first.data_dir),
                                  "gateway_extra": f"processes = {processes}"})
    await asyncio.to_thread(first.start)
    try:
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gateway.cli", "run", "--config",
                             str(second.config)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 3, result.stderr[-2000:]
        assert "is in use by another gateway process" in result.stderr
    finally:
        assert await asyncio.to_thread(first.terminate) == 0


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_port_in_use_is_a_clear_error(tmp_path, processes):
    gw = GatewayProcess(tmp_path, f"smtp://127.0.0.1:{free_port()}?tls=none",
                        over={"gateway_extra": f"processes = {processes}"})
    with socket.create_server(("127.0.0.1", gw.smtp_port)):
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gateway.cli", "run", "--config",
                             str(gw.config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result.stderr
    assert "error: cannot listen" in result.stderr and "Traceback" not in result.stderr


async def test_metrics_files_of_a_killed_gateway_are_removed_at_the_next_start(tmp_path):
    import tempfile
    from pathlib import Path

    gw = GatewayProcess(tmp_path, f"smtp://127.0.0.1:{free_port()}?tls=none", over=TWO)
    await asyncio.to_thread(gw.start)
    try:
        first = gw.proc.pid
        left = list(Path(tempfile.gettempdir()).glob(f"gateway-metrics-{first}-*"))
        assert len(left) == 1
        gw.kill()  # no chance to clean up
        assert left[0].exists()
        await asyncio.to_thread(gw.start)

        deadline = time.monotonic() + 10  # listening may come before the workers are up
        while left[0].exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not left[0].exists()
        assert await asyncio.to_thread(gw.terminate) == 0
        assert not list(Path(tempfile.gettempdir()).glob(f"gateway-metrics-{gw.proc.pid}-*"))
    finally:
        gw.kill()


@pytest.mark.parametrize("delay", [0.15, 0.25, 0.35, 0.5, 0.8])
async def test_sigterm_at_any_moment_of_start_up_stops_everything(tmp_path, delay):
    """Before the supervisor has its handlers the default action ends it (nothing was
    started); after, every worker it forked is stopped and waited for: nothing is left
    running, and the ports are free."""
    gw = GatewayProcess(tmp_path, f"smtp://127.0.0.1:{free_port()}?tls=none", over=TWO)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config",
                             str(gw.config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    await asyncio.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        proc.kill()
    assert code in (0, -signal.SIGTERM), proc.stderr.read().decode()[-2000:]
    await asyncio.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", str(gw.config)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a worker outlived gateway run"
    assert not GatewayProcess._listening(gw.smtp_port)
