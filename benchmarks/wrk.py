"""``wrk`` (Debian's, a native HTTP load generator in its own process) driving ``POST /v1/embeddings``.

wrk is closed-loop. With ``gap_ms`` > 0 each of its many connections waits an exponential gap
before every request (wrk's Lua ``delay()``), so the requests of all connections together arrive
as an approximately Poisson process of ``connections / (gap + latency)`` per second: open loop as
long as the latency is small beside the gap (a 0.5 s gap and a 50 ms latency slow the arrivals by
~10%), and the gap must stay short beside the server's keep-alive timeout (5 s), which closes an
idle connection: wrk counts that as an error. The rate actually offered is what wrk
counted, and that is what the capacity rows report. wrk2 (a constant-rate wrk) and vegeta are not
in Debian; ``benchmarks/setup_loadgen.sh`` installs wrk.

Latency is wrk's: from writing a request to reading its answer. Requests over ``--timeout`` are
errors, never silently dropped from the percentiles.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%(bodies)s}
local gap = tonumber(os.getenv("AE_GAP_MS") or "0")
local i = 0
local n = 0
function setup(thread) n = n + 1; thread:set("id", n) end
function init(args) math.randomseed(1000 * (tonumber(id) or 1) + tonumber(os.getenv("AE_SEED") or "0")) end
function request() i = i %% #bodies + 1; return wrk.format(nil, nil, nil, bodies[i]) end
function delay() if gap <= 0 then return 0 end; return -gap * math.log(1 - math.random()) end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('AE_RESULT {"requests":%%d,"duration_us":%%d,"errors":%%d,"non2xx":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def available() -> str | None:
    """wrk's path, or None."""
    return shutil.which("wrk")


@dataclass
class WrkRun:
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: CPU seconds (user + system) the load generator's process itself spent: on a box whose cores
    #: it shares with the server, what it takes from the server
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        """Requests answered per second (the offered rate, as long as the server keeps up)."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def client_us_per_request(self) -> float:
        return self.client_cpu_s / self.requests * 1e6 if self.requests else float("nan")


def children_cpu_s() -> float:
    """CPU seconds of this process's reaped children: the difference around a ``subprocess.run``
    is that child's (the benchmarks run one at a time)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_script(texts: list[str], folder: Path, model: str = "hf") -> Path:
    bodies = ",".join(
        "[==[" + json.dumps({"model": model, "input": t, "encoding_format": "base64"}) + "]==]" for t in texts
    )
    path = folder / "post.lua"
    path.write_text(_SCRIPT % {"bodies": bodies})
    return path


def run(url: str, script: Path, *, connections: int, duration_s: float, gap_ms: float = 0.0, seed: int = 0,
        threads: int = 1, timeout_s: int = 10) -> WrkRun:
    """One wrk run; ``gap_ms`` 0: closed loop (each connection sends again as soon as answered)."""
    env = {**os.environ, "AE_GAP_MS": f"{gap_ms:.3f}", "AE_SEED": str(seed)}
    cpu_before = children_cpu_s()
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", f"--timeout={timeout_s}s",
         "-s", str(script), url],
        capture_output=True, text=True, env=env, check=True, timeout=duration_s + timeout_s + 30,
    ).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("AE_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    data = json.loads(line.split(" ", 1)[1])
    return WrkRun(data["requests"], data["duration_us"] / 1e6, data["errors"] + data["non2xx"],
                  data["p50_us"] / 1e3, data["p99_us"] / 1e3, data["max_us"] / 1e3, children_cpu_s() - cpu_before)


def scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="ae-wrk-")
