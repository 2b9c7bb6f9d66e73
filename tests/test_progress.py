"""Long jobs report where no terminal is: ``bulk`` and ``embed`` under nohup, cron or CI.

The log line is checked twice: with a fake clock (what the line says and when it comes), and in a
real ``agent-embeddings bulk`` subprocess whose stderr is a pipe, as under ``nohup``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent_embeddings.progress import Progress
from benchmarks.data import short_sentences

CLI = [sys.executable, "-m", "agent_embeddings"]
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_with_done_total_rate_and_eta(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="agent_embeddings")
    progress = Progress(1000, 100, show=None, every_s=30, clock=clock, tty=False)
    for at, rows in ((10, 100), (31, 100), (40, 100), (61, 300)):
        clock.now = 1000 + at
        progress.update(rows)
    progress.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "agent_embeddings.bulk"]
    # rates count the rows of this run only (100 were done before it: a resumed job)
    assert lines == [
        "started: 100/1,000 rows (10%)",
        "300/1,000 rows (30%), 6 rows/s, ETA 1m48s",  # 200 rows in 31 s; 700 left
        "700/1,000 rows (70%), 10 rows/s, ETA 30s",  # 600 rows in 61 s; 300 left
    ]


def test_a_run_without_a_total_an_embed_label_and_the_quiet_cases(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="agent_embeddings")
    untotalled = Progress(None, show=None, every_s=0, clock=clock, tty=False, unit="text", label="embed")
    clock.now += 10
    untotalled.update(500)
    assert [r.getMessage() for r in caplog.records] == ["started: 0 texts", "500 texts, 50 texts/s"]
    assert caplog.records[0].name == "agent_embeddings.embed"
    caplog.clear()
    for quiet in (Progress(10, show=None, every_s=0, tty=True), Progress(10, show=False, every_s=0, tty=False)):
        quiet.update(5)
        quiet.close()
    assert caplog.records == []


@pytest.mark.slow
def test_bulk_under_nohup_logs_progress_lines_and_reports_load_and_embedding_apart(tmp_path: Path, default_spec):
    """stdin closed, stdout and stderr pipes: no terminal anywhere, as under nohup or cron."""
    corpus = tmp_path / "corpus.jsonl"  # JSON Lines: once a bar without a total or an ETA
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                              for i, t in enumerate(short_sentences(600, seed=3))))
    out = tmp_path / "vectors"
    base = [*CLI, "bulk", "--spec", str(default_spec), "--input", str(corpus), "--id-column", "id",
            "--output", str(out), "--shard-rows", "200"]
    env = {**os.environ, "AGENT_EMBEDDINGS_LOAD_PLUGINS": ""}
    run = subprocess.run([*base, "--log-every", "0"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if " agent_embeddings.bulk: " in line]
    assert re.fullmatch(f"{STAMP} INFO agent_embeddings.bulk: started: 0/600 rows \\(0%\\)", lines[0]), lines
    pattern = re.compile(f"{STAMP} INFO agent_embeddings.bulk: ([\\d,]+)/600 rows \\((\\d+)%\\), ([\\d,]+) rows/s, "
                         "ETA (\\d+s|\\d+m\\d\\ds)")
    found = [pattern.fullmatch(line) for line in lines[1:]]
    assert all(found) and len(found) >= 3, lines  # a line at each update: every 256 texts and each shard's end
    done = [int(m.group(1).replace(",", "")) for m in found if m]
    assert done == sorted(done) and done[-1] == 600 and found[-1] and found[-1].group(4) == "0s"
    summary = re.fullmatch(
        rf"build: 600 rows in 3 shards -> {re.escape(str(out))} \(600 embedded in ([\d.]+)s, (\d+) rows/s; "
        r"([\d.]+)s to start: input scan, model load\)\n", run.stdout)
    assert summary, run.stdout

    # --json: every field, the split included; the default interval (30 s) says only "started" here
    again = subprocess.run([*base, "--overwrite", "--json", "--log-every", "3600"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert [line.split(": ", 1)[1] for line in again.stderr.splitlines() if "agent_embeddings.bulk" in line] == [
        "started: 0/600 rows (0%)"]
    report = json.loads(again.stdout)
    assert 0 < report["load_seconds"] and 0 < report["embed_seconds"]
    assert report["load_seconds"] + report["embed_seconds"] <= report["seconds"]
    assert report["rows_per_s"] == pytest.approx(600 / report["embed_seconds"])


def test_embed_logs_progress_when_stderr_is_not_a_terminal(hf_manager, default_spec, monkeypatch, capsys):
    """In-process (the session's model): capsys's stderr is no terminal."""
    import io

    from agent_embeddings.cli import main

    texts = "".join(f"sentence number {i}\n" for i in range(600))
    monkeypatch.setattr(sys, "stdin", io.StringIO(texts))
    assert main(["embed", "--spec", str(default_spec), "--log-every", "0"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 600
    lines = [line.split(" INFO agent_embeddings.embed: ")[1] for line in err.splitlines()
             if " INFO agent_embeddings.embed: " in line]
    assert lines[0] == "started: 0/600 texts (0%)" and len(lines) == 4, err  # 256 + 256 + 88
    assert lines[1].startswith("256/600 texts (43%), ") and lines[-1].startswith("600/600 texts (100%), ")
    # the handler is the command's alone: once it returns, our loggers are as they were
    assert not logging.getLogger("agent_embeddings").handlers
