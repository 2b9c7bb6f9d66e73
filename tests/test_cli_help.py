"""The CLI guides: examples at the end of every ``--help`` (each one parsed by the real parser, so
none names a flag that does not exist), help text on every option, and usage lines that read right."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

import pytest

from agent_embeddings.bulk.cli import cmd_bulk, cmd_compare, cmd_info, cmd_verify
from agent_embeddings.cli import build_parser

from ._cli_support import parsers

CLI = [sys.executable, "-m", "agent_embeddings"]


ALL = dict(parsers(build_parser()))


def example_commands(epilog: str) -> list[list[str]]:
    """The argument lists of an epilog's example lines (``nohup`` and a trailing ``&`` or comment aside)."""
    commands = []
    for line in epilog.splitlines()[1:]:
        line = line.split("  #")[0].strip().removeprefix("nohup ").removesuffix("&").strip()
        if line.startswith("agent-embeddings "):
            words = shlex.split(line)
            shell = [i for i, w in enumerate(words) if w in (">", "|", "<")]  # a redirection ends the command
            commands.append(words[1 : shell[0] if shell else None])
    return commands


def test_every_command_is_covered():
    assert set(ALL) == {
        "agent-embeddings", "agent-embeddings embed", "agent-embeddings validate", "agent-embeddings backends",
        "agent-embeddings schema", "agent-embeddings serve", "agent-embeddings bulk", "agent-embeddings bulk verify",
        "agent-embeddings bulk info", "agent-embeddings bulk compare", "agent-embeddings search",
    }


@pytest.mark.parametrize("path", sorted(ALL))
def test_every_help_ends_with_examples_that_parse(path: str):
    parser = ALL[path]
    assert parser.epilog and parser.epilog.startswith("examples:"), path
    assert "\nexamples:\n  agent-embeddings " in parser.format_help()  # kept line by line, not re-wrapped
    commands = example_commands(parser.epilog)
    assert commands, path
    words = path.split()[1:]
    for argv in commands:
        assert argv[: len(words)] == words, f"{path}: an example of another command: {argv}"
        build_parser().parse_args(argv)  # a wrong flag or a missing required one exits 2 and fails here


@pytest.mark.parametrize("path", sorted(ALL))
def test_every_option_says_what_it_does(path: str):
    for action in ALL[path]._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, f"{path} {'/'.join(action.option_strings)}"


def test_help_through_the_real_command():
    """What a user sees: the examples, and options that were bare before (no help text)."""
    serve = subprocess.run([*CLI, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert serve.returncode == 0 and "examples:\n  agent-embeddings serve --spec specs/default.json" in serve.stdout
    text = " ".join(serve.stdout.split())  # the help of an option may wrap onto the next lines
    for option, says in (("--max-request-bytes N", "the largest request body (HTTP 413)"),
                         ("--tls-cert PEM", "serve TLS with this certificate"),
                         ("--tls-key PEM", "the private key of --tls-cert"),
                         ("--json", "when serving, print one JSON line per server on stdout")):
        assert f"{option} {says}" in text, option
    embed = subprocess.run([*CLI, "embed", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--normalize" in embed and "unit-length vectors, whatever the spec says" in embed
    assert "--skip-empty" in embed and "leave out empty and whitespace-only lines" in embed


def test_bulk_usage_shows_the_job_and_the_commands_as_alternatives():
    """Once: 'usage: agent-embeddings bulk [-h] [--spec SPEC] ... {verify,info,compare} ...', as if a
    command were required after the job's options."""
    usage = ALL["agent-embeddings bulk"].format_usage().splitlines()
    assert usage == [
        "usage: agent-embeddings bulk --spec FILE --input PATH --output DIR [options]",
        "       agent-embeddings bulk {verify,info,compare} ...   (see: agent-embeddings bulk verify --help)",
    ]
    assert ALL["agent-embeddings bulk verify"].format_usage().startswith(
        "usage: agent-embeddings bulk verify [-h] --output OUTPUT --spec SPEC")


def test_the_job_needs_no_command_and_each_command_is_its_own():
    parse = build_parser().parse_args
    job = parse(["bulk", "--spec", "s.json", "--input", "c.jsonl", "--output", "out"])
    assert (job.func, job.spec, job.input, job.output) == (cmd_bulk, "s.json", "c.jsonl", "out")
    assert parse(["bulk", "verify", "--spec", "s.json", "--output", "out"]).func is cmd_verify
    assert parse(["bulk", "info", "out"]).func is cmd_info
    assert parse(["bulk", "compare", "a", "b", "--spec", "s", "--queries", "q"]).func is cmd_compare
