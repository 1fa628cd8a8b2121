"""`mycelium --help` lists the pipeline; every subcommand's --help says what it reads and writes."""

import pytest

from mycelium.cli.docs import IO
from mycelium.cli.main import build_parser


def test_every_subcommand_says_what_it_reads_and_writes_and_where_the_docs_are(capsys):
    from pathlib import Path

    parser = build_parser()
    commands = next(a for a in parser._subparsers._group_actions).choices
    assert set(commands) == set(IO)
    root = Path(__file__).resolve().parents[2]
    for name in commands:
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        out = capsys.readouterr().out
        assert "reads:" in out and "writes:" in out, name
        assert (root / IO[name][2]).is_file(), IO[name][2]
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "capture -> analyze" in capsys.readouterr().out
