"""`liyi run` as an operator starts it: a separate process, config file, secrets in the environment."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript

ROOT = Path(__file__).resolve().parent.parent


def write_config(path: Path, sim: AsteriskSimulator, db: Path) -> None:
    path.write_text(
        f"""
company: {{name: 礼仪客服中心, timezone: Asia/Shanghai}}
ring:
  cadence: {{on_seconds: 0.1, off_seconds: 0.3}}
  answer_delay_seconds: 0.05
waiting: {{agent_retry_seconds: 0.1}}
agents:
  - {{name: agent1, endpoint: PJSIP/agent1}}
asterisk:
  ari_url: {sim.ari_url}
  ari_user: liyi
  app: liyi
  ami_host: 127.0.0.1
  ami_port: {sim.ami_port}
  ami_user: liyi
database:
  url: sqlite+aiosqlite:///{db}
web:
  port: 0
""",
        encoding="utf-8",
    )


async def _wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


class TestRunCommand:
    async def test_run_serves_calls_and_stops_cleanly_on_ctrl_c(self, tmp_path: Path) -> None:
        """`liyi run --config` answers and connects a call, and SIGINT stops it with status 0."""
        sim = AsteriskSimulator(prompt_seconds=0.05)
        await sim.start()
        sim.add_agent("agent1", script=AgentScript(answer_after=0.1))
        config = tmp_path / "liyi.yaml"
        db = tmp_path / "run.db"
        write_config(config, sim, db)
        env = {**os.environ, "LIYI_ARI_PASSWORD": "liyi-sim", "LIYI_AMI_SECRET": "liyi-sim"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "liyi.cli", "run", "--config", str(config),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            await _wait_for(lambda: sim.app_connected, 20)
            await asyncio.sleep(0.3)  # AMI presence
            call = await sim.place_call("13800138000",
                                        script=CallerScript(hang_up_after_connected=0.2))
            await asyncio.wait_for(call.ended.wait(), 15)
            await asyncio.sleep(0.5)  # the log writer's group commit
            proc.send_signal(signal.SIGINT)
            _out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await sim.stop()
        assert proc.returncode == 0, err.decode()
        assert [h.what for h in call.heard][:2] == ["ringing", "answered"]
        assert "connected" in [h.what for h in call.heard]
        from db import CallStore
        store = CallStore(f"sqlite+aiosqlite:///{db}")
        await store.start()
        try:
            calls = await store.list_calls()
        finally:
            await store.close()
        assert len(calls) == 1 and calls[0].first_hangup == "caller"
        assert calls[0].compliance["R1"] == "kept"

    def test_run_without_the_ari_password_refuses_to_start(self, tmp_path: Path) -> None:
        """With LIYI_ARI_PASSWORD unset, `liyi run` says so and exits non-zero."""
        import subprocess

        config = tmp_path / "liyi.yaml"
        config.write_text((ROOT / "liyi.yaml").read_text(encoding="utf-8"), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIYI_")}
        done = subprocess.run([sys.executable, "-m", "liyi.cli", "run", "--config", str(config)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2
        assert "LIYI_ARI_PASSWORD" in done.stderr
