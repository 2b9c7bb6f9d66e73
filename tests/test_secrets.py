"""Secrets (issue 19, findings 3, 6 and 8): keys checked when a spec loads, ``file:`` references
that read one short line of a regular file, errors that never repeat a value, and one redactor
that replaces a registered secret whole in every shape, in every logger and every error.

Real CLI subprocesses and the real ``openai`` client against loopback sockets; nothing mocked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_embeddings import BackendError, ConfigurationError, EmbeddingGeneratorManager, SpecError
from agent_embeddings.redaction import MASK, redact, remember_secret

CLI = [sys.executable, "-m", "agent_embeddings"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "AGENT_EMBEDDINGS_LOAD_PLUGINS": "", **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=environ, timeout=timeout)


def openai_spec(path: Path, base_url: str, **params: object) -> Path:
    item = {"llm_type": "embeddings", "name": "oa", "llm_block_id": "openai:m",
            "llm_parameters": {"base_url": base_url, "retry": {"attempts": 1}, **params}}
    path.write_text(json.dumps({"subject_id": "s", "models": [item]}))
    return path


@pytest.fixture
def listener() -> Iterator[str]:
    """A loopback endpoint that accepts connections and never answers: a request gets as far as
    sending its headers (where httpx refuses an illegal header value, quoting it)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    server.close()


# -- finding 3: a key must be one line of printable ASCII; redaction replaces a secret whole -----
NEWLINE_KEY = "first-line-of-the-key-Q1w2E3\nSECOND-LINE-OF-THE-KEY-r4T5y6"


def test_finding_03_a_key_with_a_line_break_is_refused_when_the_spec_loads_naming_the_field(tmp_path, listener):
    by_env = openai_spec(tmp_path / "env.json", listener, api_key_ref="env:NEWLINE_KEY")
    key_file = tmp_path / "key.txt"
    key_file.write_text(NEWLINE_KEY + "\n")
    by_file = openai_spec(tmp_path / "file.json", listener, api_key_ref=f"file:{key_file}")
    literal = openai_spec(tmp_path / "literal.json", listener, api_key=NEWLINE_KEY)
    env = {"NEWLINE_KEY": NEWLINE_KEY}
    validate = run("validate", str(by_env), str(by_file), str(literal), env=env)
    embed = run("embed", "--spec", str(by_env), "hello", env=env)  # on the old code: LocalProtocolError
    assert validate.returncode == 1 and embed.returncode == 1
    errors = validate.stderr.strip().splitlines()
    assert len(errors) == 3, validate.stderr
    assert "llm_parameters.api_key_ref" in errors[0] and "environment variable NEWLINE_KEY" in errors[0]
    assert "llm_parameters.api_key_ref" in errors[1] and str(key_file) in errors[1]
    assert "llm_parameters.api_key" in errors[2]
    assert all("line break" in line for line in errors) and "line break" in embed.stderr
    for line in NEWLINE_KEY.splitlines():
        assert line not in validate.stderr + embed.stderr


def test_finding_03_a_proc_environ_key_reference_never_prints_the_environment(tmp_path, listener):
    spec = openai_spec(tmp_path / "spec.json", listener, api_key_ref="file:/proc/self/environ")
    planted = "planted-environment-value-Z9x8C7v6"
    result = run("embed", "--spec", str(spec), "hello", env={"SOME_SERVICE_PASSWORD": planted})
    assert result.returncode == 1
    assert "/proc/self/environ" in result.stderr and "pseudo-file" in result.stderr
    assert planted not in result.stderr and planted not in result.stdout


def test_finding_03_every_logger_and_every_error_masks_a_registered_secret_whole(caplog):
    """A secret with a line break, a backslash and quotes, printed the ways libraries print it."""
    secret = 'planted-Whole-\\-"secret\'\nsecond-LINE-of-it'
    remember_secret(secret)
    fragments = ("planted-Whole", "second-LINE-of-it")
    header = b"Bearer " + secret.encode()
    loggers = ["httpx2", "httpcore2.http11", "uvicorn.error", "grpc._server", "openai._base_client", "",
               "agent_embeddings.backends.openai"]
    for name in [*loggers, "uvicorn.access"]:
        caplog.set_level(logging.DEBUG, logger=name)
    for name in loggers:
        logger = logging.getLogger(name)
        logger.debug("Illegal header value %r", header)  # a bytes repr: \n escaped
        logger.info("options %s", {"headers": {"X-Session": secret}})  # a dict's str: repr of the value
        logger.warning("body %s", json.dumps({"echo": secret}))  # JSON-escaped
        logger.error("%s", repr(repr(header)))  # a repr inside a repr: backslashes doubled
        try:
            raise ValueError(f"Illegal header value {header!r}")
        except ValueError:
            logger.exception("request failed")
    uvicorn_access = logging.getLogger("uvicorn.access")  # its formatter unpacks record.args
    from uvicorn.logging import AccessFormatter

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    keep = Keep()
    keep.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False))
    uvicorn_access.addHandler(keep)
    try:
        uvicorn_access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "POST", f"/v1/x?k={secret}", "1.1", 200)
    finally:
        uvicorn_access.removeHandler(keep)
    error = BackendError(f"cannot connect: LocalProtocolError: Illegal header value {header!r}")
    shown = [caplog.text, *records, str(error), repr(error)]
    names = {name or "root" for name in loggers}
    assert sum(r.name in names for r in caplog.records) == 5 * len(loggers)
    assert records and "POST /v1/x?k=" in records[0]  # uvicorn's formatter still had its arguments
    everything = "\n".join(shown)
    assert everything.count(MASK) >= 5 * len(loggers)
    for fragment in fragments:
        assert fragment not in everything


def test_redaction_of_an_unregistered_url_password_and_key_shaped_text():
    assert redact("POST http://someone:hunter2@db.internal/x") == f"POST http://{MASK}@db.internal/x"
    assert redact("secret: the file is missing") == "secret: the file is missing"  # prose stays
    assert redact('{"token": "abcdef12"}') == f'{{"token": "{MASK}"}}'


# -- finding 6: a key pasted where a reference belongs is not echoed -----------------------------
PASTED = "sk-proj-PASTEDpastedPASTED-9Q8w7E6r"
GOOGLE = "AIzaSyPASTEDgoogleKEY-5t4Y3u2I1o"


@pytest.mark.parametrize(("params", "field"), [
    ({"api_key_ref": PASTED}, "llm_parameters.api_key_ref"),
    ({"api_key_ref": f"env:{PASTED}"}, "llm_parameters.api_key_ref"),
    ({"api_key_ref": f"env:{GOOGLE.replace('-', '_')}"}, "llm_parameters.api_key_ref"),  # a valid name, unset
    ({"api_key_ref": f"file:{GOOGLE}"}, "llm_parameters.api_key_ref"),
    ({"api_key_ref": [PASTED]}, "llm_parameters.api_key_ref"),
    ({"default_headers": f"X-Session: {PASTED}"}, "llm_parameters.default_headers"),
    ({"default_headers": ["X-Session", PASTED]}, "llm_parameters.default_headers"),
    ({"default_headers": {"X-Session": PASTED + "\n"}}, "llm_parameters.default_headers"),
], ids=["bare-key", "env-key", "env-name-key", "file-key", "list", "headers-str", "headers-list", "header-line"])
def test_finding_06_a_key_pasted_where_a_reference_belongs_is_not_echoed(params, field):
    spec = {"subject_id": "s", "models": [{"llm_type": "embeddings", "name": "oa", "llm_block_id": "openai:m",
                                           "llm_parameters": {"base_url": "http://127.0.0.1:9/v1", **params}}]}
    with pytest.raises((SpecError, ConfigurationError)) as info:
        EmbeddingGeneratorManager.from_subject_spec(spec)
    message = str(info.value)
    assert field in message and "models[0]" in message
    for key in (PASTED, GOOGLE, GOOGLE.replace("-", "_")):
        assert key not in message and key[8:20] not in message


def test_finding_06_the_cli_says_what_is_wrong_without_the_value(tmp_path):
    files = []
    for i, params in enumerate([{"api_key_ref": PASTED}, {"api_key_ref": f"env:{PASTED}"},
                                {"api_key_ref": f"file:{GOOGLE}"}, {"default_headers": [PASTED]}]):
        files.append(str(openai_spec(tmp_path / f"s{i}.json", "http://127.0.0.1:9/v1", **params)))
    result = run("validate", *files)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 4, result.stderr
    assert "must be 'env:NAME' or 'file:PATH'" in lines[0] and "environment variable name" in lines[1]
    assert "does not exist" in lines[2] and "valid dictionary" in lines[3]
    assert PASTED[8:] not in result.stderr and GOOGLE[6:] not in result.stderr


# -- finding 8: file: references read one short line of a regular file --------------------------
def _bad_key_files(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (path, what the error must say), each a file the old code mishandled."""
    (tmp_path / "binary.key").write_bytes(b"sk-\xff\xfe\x00Qbinzbin-content")
    (tmp_path / "bom.key").write_bytes(b"\xef\xbb\xbfsk-bom-key-123456")
    (tmp_path / "accent.key").write_bytes("sk-clé-123456".encode())
    (tmp_path / "two-lines.key").write_text("root:$6$salt$hash:19000::::::\nuser:$6$x$y:19000::::::\n")
    (tmp_path / "big.key").write_text("k" * 10_000)
    (tmp_path / "a-directory").mkdir()
    os.mkfifo(tmp_path / "fifo.key")  # the old code waited for a writer forever
    return {
        "binary": (str(tmp_path / "binary.key"), "not UTF-8"),
        "bom": (str(tmp_path / "bom.key"), "byte-order mark"),
        "accent": (str(tmp_path / "accent.key"), "non-ASCII"),
        "two-lines": (str(tmp_path / "two-lines.key"), "line break"),
        "big": (str(tmp_path / "big.key"), "10000 bytes"),
        "directory": (str(tmp_path / "a-directory"), "a directory"),
        "fifo": (str(tmp_path / "fifo.key"), "a FIFO"),
        "dev-zero": ("/dev/zero", "a character device"),
        "proc": ("/proc/self/environ", "pseudo-file"),
    }


def test_finding_08_file_key_references_refuse_anything_but_one_short_line_by_name(tmp_path):
    cases = _bad_key_files(tmp_path)
    specs = [str(openai_spec(tmp_path / f"{name}.json", "http://127.0.0.1:9/v1", api_key_ref=f"file:{path}"))
             for name, (path, _) in cases.items()]
    good = tmp_path / "good.key"
    good.write_text("sk-good-key-0123456789\n")  # one line and its newline: accepted
    specs.append(str(openai_spec(tmp_path / "good.json", "http://127.0.0.1:9/v1", api_key_ref=f"file:{good}")))
    result = run("validate", *specs, timeout=60)  # a FIFO must not hang it
    errors = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(errors) == len(cases), result.stderr
    for line, (name, (path, reason)) in zip(errors, cases.items()):
        assert "llm_parameters.api_key_ref" in line and path in line and reason in line, (name, line)
        assert "unexpected" not in line
    assert f"{tmp_path / 'good.json'}: ok (1 embedding generator(s)" in result.stdout
    for secret in ("Qbinzbin-content", "bom-key-123456", "sk-clé", "$6$salt$hash", "k" * 50):
        assert secret not in result.stderr


def test_a_good_file_key_is_the_trimmed_line(tmp_path):
    from agent_embeddings.secrets import resolve_secret_ref

    key_file = tmp_path / "key"
    key_file.write_text("  sk-from-file-0123456789\r\n")
    assert resolve_secret_ref(f"file:{key_file}").get_secret_value() == "sk-from-file-0123456789"
    assert redact("it was sk-from-file-0123456789") == f"it was {MASK}"  # registered when resolved


def test_resolving_keys_is_safe_from_threads(tmp_path, monkeypatch):
    """Registration swaps the redactor's tables whole: redacting threads never see half of one."""
    stop = threading.Event()
    seen: list[str] = []

    def redacting() -> None:
        while not stop.is_set():
            seen.append(redact("value racekey-17-abcdef and racekey-3-abcdef"))

    thread = threading.Thread(target=redacting)
    thread.start()
    for i in range(40):
        remember_secret(f"racekey-{i}-abcdef")
    stop.set()
    thread.join()
    assert redact("value racekey-17-abcdef and racekey-3-abcdef") == f"value {MASK} and {MASK}"
    assert seen
