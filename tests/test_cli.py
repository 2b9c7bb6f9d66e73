"""The agent-embeddings command: real subprocesses, real model, one-line errors."""

from __future__ import annotations

import asyncio
import io
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent_embeddings.specs import subject_spec_schema

from ._cli_support import parsers

CLI = [sys.executable, "-m", "agent_embeddings"]


def run(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, env=environ, timeout=180)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agent-embeddings: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.slow
def test_embed_arguments_and_stdin_as_json_lines(default_spec: Path, hf_manager):
    texts = ["What is AI?", "A man is eating food."]
    result = run("embed", "--spec", str(default_spec), "--include-text", *texts)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["index"], r["text"]) for r in rows] == [(0, texts[0]), (1, texts[1])]
    expected = hf_manager.encode("hf", texts)
    assert np.abs(np.array([r["embedding"] for r in rows]) - expected).max() <= 1e-5

    piped = run("embed", "--spec", str(default_spec), "--name", "hf", stdin="\n".join(texts) + "\n")
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(line)["embedding"] for line in piped.stdout.splitlines()] == [r["embedding"] for r in rows]


@pytest.mark.slow
def test_embed_summary_and_progress(default_spec: Path):
    lines = "\n".join(f"sentence number {i}" for i in range(300))
    result = run("embed", "--spec", str(default_spec), "--progress", stdin=lines)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 300
    assert "300/300 texts" in result.stderr
    summary = run("embed", "--spec", str(default_spec), "--format", "summary", "hello")
    assert "dims=384 norm=1.0000 first=[" in summary.stdout


def test_embed_errors_are_one_line(default_spec: Path, tmp_path: Path):
    assert_one_line_error(run("embed", "--spec", str(tmp_path / "missing.json"), "x"), "spec file not found")
    assert_one_line_error(
        run("embed", "--spec", str(default_spec), "--name", "nope", "x"),
        "unknown generator 'nope'; known generators: hf, hf-minilm, hf:sentence-transformers/all-MiniLM-L6-v2",
    )
    assert_one_line_error(run("embed", "--spec", str(default_spec), stdin="a\n\nb\n"), "stdin line 2 is empty")
    assert_one_line_error(run("embed", "--spec", str(default_spec), stdin=""), "no text given")


def test_validate_good_and_bad_specs_without_torch(default_spec: Path, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"subject_id": "x", "models": [{"llm_type": "embeddings", "llm_block_id": "zz:y"}]}')
    code = (
        "import sys; from agent_embeddings.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'validate imported torch'; raise SystemExit(rc)"
    )
    ok = subprocess.run([sys.executable, "-c", code, "validate", str(default_spec)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"{default_spec}: ok (1 embedding generator(s), 0 other item(s))" in ok.stdout
    assert "hf-minilm (also: hf:sentence-transformers/all-MiniLM-L6-v2, hf): hf" in ok.stdout
    result = subprocess.run([sys.executable, "-c", code, "validate", str(bad)], capture_output=True, text=True)
    assert_one_line_error(result, "bad.json: models[0] ('zz:y'): unknown backend prefix 'zz:'")


def test_backends_and_schema_without_torch():
    code = (
        "import sys, contextlib, io; from agent_embeddings.cli import main\n"
        "for cmd in (['backends'], ['schema']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()): assert main(cmd) == 0\n"
        "assert 'torch' not in sys.modules\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
    table = run("backends").stdout.splitlines()
    assert table[0].split() == ["prefix", "factory", "distribution", "version"]
    assert any(line.split()[:3] == ["hf", "agent_embeddings.backends.huggingface.HuggingFaceEmbeddingGenerator"
                                    ".from_model_item", "agent-embeddings"] for line in table[1:])
    assert json.loads(run("schema").stdout) == subject_spec_schema()


def test_embed_names_an_empty_or_whitespace_only_line_and_skip_empty_leaves_them_out(
    default_spec: Path, hf_manager, monkeypatch, capsys
):
    """A whitespace-only line was embedded silently (to the vector every such line shares)."""
    spec = str(default_spec)
    rc, out, err = run_main(["embed", "--spec", spec], monkeypatch, capsys, b"one\n \t \nthree\n\n")
    assert (rc, out) == (1, "")
    assert err == ("agent-embeddings: error: stdin line 2 is whitespace only (and 1 more); such a text has no "
                   "meaningful embedding: remove it, or pass --skip-empty to leave such lines out\n")
    rc, out, err = run_main(["embed", "--spec", spec, "x", ""], monkeypatch, capsys)
    assert rc == 1 and "error: argument 2 is empty; " in err

    data = b"one\n\n  \nfour\n\xe2\x80\xa8\n"  # U+2028 alone is whitespace to str.strip(): skipped too
    rc, out, err = run_main(["embed", "--spec", spec, "--skip-empty", "--include-text"], monkeypatch, capsys, data)
    assert rc == 0, err
    assert err == "agent-embeddings: skipped 3 empty or whitespace-only texts: stdin lines 2, 3, 5\n"
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["index"], r["text"]) for r in rows] == [(0, "one"), (3, "four")]  # the index stays the line's
    assert np.abs(np.array([r["embedding"] for r in rows]) - hf_manager.encode("hf", ["one", "four"])).max() <= 1e-5
    rc, _, err = run_main(["embed", "--spec", spec, "--skip-empty"], monkeypatch, capsys, b"\n \n")
    assert rc == 1 and "no text given" in err


def test_serve_json_prints_the_bound_addresses_on_stdout(light_spec):
    """``--port 0`` users need the port the server bound: one JSON line per server, on stdout."""
    proc = subprocess.Popen([*CLI, "serve", "--spec", str(light_spec()), "--http", "127.0.0.1:0", "--grpc",
                             "127.0.0.1:0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "AGENT_EMBEDDINGS_LOAD_PLUGINS": ""})
    try:
        assert proc.stdout is not None
        rows = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert sorted(r["kind"] for r in rows) == ["grpc", "http"]
    for row in rows:
        host, port = row["address"].rsplit(":", 1)
        assert (row["event"], host, row["models"]) == ("serving", "127.0.0.1", ["remote"]) and int(port) > 0


def test_usage_errors_exit_2():
    result = run("embed")
    assert result.returncode == 2 and "--spec" in result.stderr and "Traceback" not in result.stderr


# -- issue 19, finding 19: lines are split on "\n" only; --input FILE; no prefix matching ----------
# Texts holding the characters str.splitlines() also takes for line ends; the third line ends in CRLF.
ODD_LINES = ["form\x0cfeed here", "paragraph\u2028separator", "file\x1cseparator and\x1dgroup"]


def run_main(argv: list[str], monkeypatch, capsys, stdin: bytes = b"") -> tuple[int, str, str]:
    """The real CLI in this process (the session's model is shared), with stdin as POSIX gives it:
    UTF-8, newline="\\n", so "\\r" and every other character reach the program untranslated."""
    from agent_embeddings.cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8", newline="\n"))
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_finding_19_stdin_is_split_on_newlines_only(default_spec: Path, hf_manager, monkeypatch, capsys):
    data = (ODD_LINES[0] + "\n" + ODD_LINES[1] + "\n" + ODD_LINES[2] + "\r\n").encode()
    rc, out, err = run_main(["embed", "--spec", str(default_spec), "--include-text"], monkeypatch, capsys, data)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["index"], r["text"]) for r in rows] == list(enumerate(ODD_LINES))  # 3 lines, 3 vectors
    expected = hf_manager.encode("hf", ODD_LINES)
    assert np.abs(np.array([r["embedding"] for r in rows]) - expected).max() <= 1e-5


def test_finding_19_embed_input_file(default_spec: Path, hf_manager, monkeypatch, capsys, tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_bytes(("\r\n".join(ODD_LINES) + "\n").encode())
    rc, out, err = run_main(["embed", "--spec", str(default_spec), "--input", str(texts), "--include-text"],
                            monkeypatch, capsys)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ODD_LINES  # the file's lines, not its name as one text
    assert np.abs(np.array([r["embedding"] for r in rows]) - hf_manager.encode("hf", ODD_LINES)).max() <= 1e-5

    for argv, message in (
        (["--input", str(tmp_path / "missing.txt")], f"--input {tmp_path / 'missing.txt'}: no such file"),
        (["--input", str(tmp_path)], "is a directory"),
        (["--input", str(texts), "hello"], "give TEXT arguments or --input FILE, not both"),
    ):
        rc, out, err = run_main(["embed", "--spec", str(default_spec), *argv], monkeypatch, capsys)
        assert (rc, out) == (1, "") and err.startswith("agent-embeddings: error: "), err
        assert message in err and len(err.strip().splitlines()) == 1
    texts.write_bytes(b"one\n\xff\xfe\n")
    rc, _, err = run_main(["embed", "--spec", str(default_spec), "--input", str(texts)], monkeypatch, capsys)
    assert rc == 1 and "not UTF-8 text (byte 4)" in err
    texts.write_text("one\n\nthree\n")
    rc, _, err = run_main(["embed", "--spec", str(default_spec), "--input", str(texts)], monkeypatch, capsys)
    assert rc == 1 and f"{texts} line 2 is empty" in err


def test_finding_19_no_option_is_taken_for_a_prefix_of_another(default_spec: Path, tmp_path: Path, monkeypatch, capsys):
    from agent_embeddings.cli import build_parser

    found = dict(parsers(build_parser()))
    assert {"agent-embeddings embed", "agent-embeddings serve", "agent-embeddings bulk verify"} <= set(found)
    assert [path for path, parser in found.items() if parser.allow_abbrev] == []
    # Abbreviations that argparse would complete by default are usage errors (exit 2), never guesses.
    for argv in (
        ["embed", "--spec", str(default_spec), "--include", "hello"],  # --include-text
        ["embed", "--spec", str(default_spec), "--input-t", "query", "hello"],  # --input-type
        ["bulk", "--spec", str(default_spec), "--inp=x.jsonl", "--output", str(tmp_path / "o")],  # --input
        ["bulk", "verify", "--spec", str(default_spec), "--out", str(tmp_path / "o")],  # --output
    ):
        with pytest.raises(SystemExit) as info:
            run_main(argv, monkeypatch, capsys)
        err = capsys.readouterr().err
        assert info.value.code == 2, argv
        assert "unrecognized arguments: --" in err or "required: --output" in err, err


# -- issue 19, finding 20: specs that load nothing, or cannot be read, are one-line errors ------------
def test_finding_20_validate_and_serve_refuse_a_spec_without_an_embedding_generator(tmp_path: Path, monkeypatch,
                                                                                  capsys):
    block = "hf:sentence-transformers/all-MiniLM-L6-v2"
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"subject_id": "t", "models": [{"llm_type": "embedings", "llm_block_id": block}]}))
    expected = (f"agent-embeddings: error: {typo}: no embedding generator in this spec; every item is skipped: "
                f"models[0] ('{block}'): llm_type 'embedings' is not 'embeddings' (did you mean 'embeddings'?)")
    assert run_main(["validate", str(typo)], monkeypatch, capsys) == (1, "", expected + "\n")
    # serve used to start and serve nothing; now it stops before listening (timeout: it would serve forever)
    served = subprocess.run([*CLI, "serve", "--spec", str(typo), "--http", "127.0.0.1:0"], capture_output=True,
                            text=True, timeout=120)
    assert (served.returncode, served.stderr.strip()) == (1, expected), served.stderr

    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"subject_id": "t", "models": [
        {"llm_type": "embeddings", "llm_block_id": block, "name": "ok"},
        {"llm_type": "embeding", "llm_block_id": block, "name": "lost"},
    ]}))
    rc, out, _ = run_main(["validate", str(mixed)], monkeypatch, capsys)
    assert rc == 0 and out.splitlines()[0] == f"{mixed}: ok (1 embedding generator(s), 1 other item(s))"
    assert f"  skipped models[1] ('{block}'): llm_type 'embeding' is not 'embeddings' (did you mean 'embeddings'?)" \
        in out.splitlines()

    for name, text, message in (
        ("deep.json", '{"subject_id": "t", "models": ' + "[" * 50_000 + "]" * 50_000 + "}",
         "JSON nested more than 64 levels deep"),
        ("long.json", '{"subject_id": "t", "models": [], "n": ' + "7" * 5000 + "}",
         "a number of 5000 digits at line 1, column 40 is too long"),
    ):
        path = tmp_path / name
        path.write_text(text)
        assert run_main(["validate", str(path)], monkeypatch, capsys) == (
            1, "", f"agent-embeddings: error: {path}: {message}\n")


# -- issue 19, findings 15, 16, 18 ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-concurrency", "0"), ("--max-concurrency", "-1"), ("--max-inputs", "0"),
        ("--max-request-bytes", "-1"), ("--max-request-bytes", str(2**31)),  # gRPC sizes are int32
        ("--max-input-chars", "-3"), ("--grace-period", "nan"), ("--grace-period", "-5"),
        ("--grace-period", "inf"), ("--metrics-port", "70000"), ("--switch-interval", "0"),
        ("--switch-interval", "nan"), ("--switch-interval", "5000"),
    ],
)
def test_finding_15_serve_refuses_a_bad_limit_in_one_line_before_loading_the_spec(flag, value, tmp_path, capsys):
    """Once accepted: 0/-1 answered 429 or 413 to every request, -1 lifted gRPC's limit, nan was an
    'unexpected ValueError'. The spec named here does not exist: the flag must be refused first."""
    from agent_embeddings.cli import main

    missing = tmp_path / "never-read.json"
    code = main(["serve", "--spec", str(missing), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", flag, value])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("agent-embeddings: error: ") and flag in err and "unexpected" not in err, err
    assert "never-read" not in err


@pytest.mark.parametrize(("args", "interval"), [([], 0.001), (["--switch-interval", "0.5"], 0.0005)])
def test_serve_paces_the_interpreter_s_threads_before_loading_the_spec(args, interval, tmp_path, capsys, monkeypatch):
    """1 ms by default, not Python's 5: a model thread back from a pass waits less for the GIL."""
    from agent_embeddings import cli

    seen: list[float] = []
    monkeypatch.setattr(cli.sys, "setswitchinterval", seen.append)
    missing = tmp_path / "missing.json"
    assert cli.main(["serve", "--spec", str(missing), "--http", "127.0.0.1:0", *args]) == 1
    assert "missing.json" in capsys.readouterr().err and seen == [interval]


def test_serve_freezes_what_it_has_loaded_once_ready(light_spec, monkeypatch):
    """Once the models are loaded, ``serve`` freezes the heap (gc.freeze): a full collection walked all
    of it, a ~70-80 ms stall of every thread every ~20 s at 145 requests/s on ONNX Runtime."""
    import gc

    from agent_embeddings import cli
    from agent_embeddings.server import runner

    frozen: list[int] = []
    at_ready: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))  # the test process keeps its heap

    async def serve_at_once(manager, servers, *, config, on_ready):  # started, loaded, then stopped
        assert manager.names() == ["remote"] and not frozen
        on_ready([])
        at_ready.append(len(frozen))

    monkeypatch.setattr(runner, "run_servers", serve_at_once)
    assert cli.main(["serve", "--spec", str(light_spec()), "--http", "127.0.0.1:0"]) == 0
    assert at_ready == [1]  # frozen when ready (and once more as the process ends)


def test_finding_16_serve_logs_one_access_line_per_request_by_default_and_obeys_log_level(light_spec):
    """Both servers of one ``serve``: an INFO line per request on stderr by default (once: none, and
    no 4xx either); ``--log-level warning`` turns them off."""
    import grpc
    import httpx

    from agent_embeddings.protocol.convert import pb
    from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2_grpc as pb_grpc
    from agent_embeddings.server.process import ServeProcess

    from ._grpc_support import wait_for

    env = {"AGENT_EMBEDDINGS_LOAD_PLUGINS": ""}
    outputs = []
    for args in ([], ["--log-level", "warning"]):
        with ServeProcess(light_spec(), http="127.0.0.1:0", grpc="127.0.0.1:0", args=args, env=env) as served:
            http = f"http://{served.addresses['http']}"
            assert httpx.get(f"{http}/v1/models").status_code == 200
            assert httpx.post(f"{http}/v1/embeddings", json={"model": "nope", "input": "a text"}).status_code == 404
            with grpc.insecure_channel(served.addresses["grpc"]) as channel:
                assert pb_grpc.EmbeddingServiceStub(channel).Info(pb.InfoRequest(), timeout=10).models
            if not args:
                wait_for(lambda: served.output.count("agent_embeddings.access") >= 3)
            assert served.terminate() == 0, served.output
        outputs.append(served.output)
    default, quiet = outputs
    access = [line.split("agent_embeddings.access: ")[1] for line in default.splitlines() if "agent_embeddings.access" in line]
    assert len(access) == 3 and all(" INFO agent_embeddings.access: " in line for line in default.splitlines()
                                    if "agent_embeddings.access" in line), default
    assert access[0].startswith("http GET /v1/models 200 texts=- ")
    assert access[1].startswith("http POST /v1/embeddings 404 texts=1 ") and access[1].endswith(" error=model_not_found")
    assert access[2].startswith("grpc Info OK texts=- ")
    assert "a text" not in default
    assert "agent_embeddings.access" not in quiet and " INFO " not in quiet, quiet


_LOG_AND_SAY = """
import logging, sys, threading
from agent_embeddings.cli import _say
from agent_embeddings.cli_common import queued_log

log = logging.getLogger("agent_embeddings.access")
with queued_log("info"):
    writer = threading.Thread(target=lambda: [log.info("record %d of %s", i, "the loop") for i in range(3000)])
    writer.start()
    for i in range(2000):
        _say(f"agent-embeddings: serving http on 127.0.0.1:{i}")
    writer.join()
    log.debug("below the level: not written")
"""


def test_serve_logs_from_a_thread_of_its_own_whole_lines_and_all_of_them(root):
    """``serve``'s log (cli_common.queued_log): records are queued and written by a listener thread;
    lines written straight to a real stderr pipe meanwhile (the 'serving ...' lines) stay whole (with
    print, which writes a line in two, ~400 of 2,000 were cut by a record here), and what is still
    queued when serving ends is written before the block returns. Unbuffered, as the Dockerfile runs
    it: then each write is a write to the pipe, and another thread's line can come between two."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-c", _LOG_AND_SAY], cwd=root, capture_output=True, text=True,
                            env=env, timeout=120, check=True)
    lines = result.stderr.splitlines()
    served = [line for line in lines if line.startswith("agent-embeddings: serving http on 127.0.0.1:")]
    logged = [line for line in lines if " INFO agent_embeddings.access: record " in line]
    assert all(line.count("agent-embeddings: serving") + line.count(" INFO ") == 1 for line in lines), \
        [line for line in lines if line.count("agent-embeddings: serving") + line.count(" INFO ") != 1][:3]
    assert len(served) == 2000 and len(logged) == 3000 and len(lines) == 5000
    assert [int(line.split()[-4]) for line in logged] == list(range(3000))  # in order, the last ones too


_LOG_TO_A_STUCK_READER = """
import logging, sys
from agent_embeddings.cli_common import queued_log

log = logging.getLogger("agent_embeddings.access")
with queued_log("info", capacity=100):
    for i in range(5000):
        log.info("record %d of an access log whose reader is stuck", i)
    print("logged", flush=True)
    sys.stdin.readline()  # until the reader reads again
"""


def test_serve_s_log_drops_and_counts_what_a_stuck_reader_has_no_room_for(root):
    """A log reader that stops reading (a stuck collector: the pipe stays open, nobody reads it)
    costs the server neither its time nor unbounded memory: 5,000 records are logged at once with
    nothing reading stderr, the queue holds 100, the rest that find no room are dropped, and a
    warning counts them once the reader reads again, so that nothing is lost unsaid."""
    proc = subprocess.Popen([sys.executable, "-c", _LOG_TO_A_STUCK_READER], cwd=root, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline() == "logged\n", "logging waited for the stuck reader"
        _, err = proc.communicate("go on\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    lines = err.splitlines()
    written = [int(line.split(" record ")[1].split()[0]) for line in lines if " INFO agent_embeddings.access: record " in line]
    notices = [line for line in lines if " log records dropped: the log's reader fell 100 records behind" in line]
    dropped = sum(int(line.split(": ")[1].split()[0]) for line in notices)
    assert notices and dropped > 0 and len(lines) == len(written) + len(notices), lines[:3] + notices
    assert written == sorted(written) and written[:100] == list(range(100)), written[:120]
    assert len(written) + dropped == 5000  # every record written or counted


_HIDE_MODULE = '''
import importlib.abc, sys

class _Hide(importlib.abc.MetaPathFinder):
    """This interpreter behaves as if {name!r} were not installed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == {name!r} or fullname.startswith({name!r} + "."):
            raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)
        return None

sys.meta_path.insert(0, _Hide())
'''


@pytest.mark.parametrize(("hidden", "server"), [("prometheus_client", "--http"), ("fastapi", "--http"), ("grpc", "--grpc")])
def test_finding_18_serve_without_the_server_extra_says_how_to_install_it(hidden, server, light_spec, tmp_path):
    """The extra is simulated missing: a ``sitecustomize`` on PYTHONPATH hides the module from the
    CLI's interpreter (once: 'unexpected ModuleNotFoundError: prometheus_client', after the spec loaded)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_HIDE_MODULE.format(name=hidden))
    pythonpath = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run("serve", "--spec", str(light_spec()), server, "127.0.0.1:0", env={"PYTHONPATH": pythonpath})
    assert_one_line_error(result, "'server' extra", f"{hidden} is not installed", "pip install 'agent-embeddings[server]'")


def test_serve_runs_on_uvloop_when_installed_and_loop_asks_for_it_plainly(light_spec, tmp_path):
    """``--loop auto`` (the default) is uvloop when it is installed, asyncio's loop when it is not;
    ``--loop uvloop`` without it is a one-line error naming the extra, before any model loads."""
    import uvloop

    from agent_embeddings.server.runner import loop_factory
    from agent_embeddings.server.runner import run as run_on_loop

    async def running() -> type:
        return type(asyncio.get_running_loop())

    assert run_on_loop(running()) is uvloop.Loop
    assert run_on_loop(running(), "asyncio") is not uvloop.Loop and loop_factory("asyncio") is None
    with pytest.raises(ValueError, match="loop must be one of"):
        loop_factory("trio")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_HIDE_MODULE.format(name="uvloop"))
    pythonpath = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run("serve", "--spec", str(tmp_path / "never-read.json"), "--http", "127.0.0.1:0", "--loop", "uvloop",
                 env={"PYTHONPATH": pythonpath})
    assert_one_line_error(result, "'server' extra", "uvloop is not installed", "pip install 'agent-embeddings[server]'")
