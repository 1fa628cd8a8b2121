"""The README's front page: its headline numbers are the committed reports', its picture and links exist."""

import re
from pathlib import Path

from mycelium.evaluation import headline

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_headline_table_is_the_committed_reports():
    assert headline.block(README) == headline.table(ROOT), \
        "README's headline table differs from the reports: run `python -m mycelium.evaluation.headline`"


def test_the_headline_table_shows_the_reports_numbers():
    import json

    g = json.loads((ROOT / headline.GSM8K).read_text())
    block = headline.block(README)
    for x in (g["solver"]["accuracy"], g["baselines"]["last number in the problem"]["accuracy"],
              g["solver"]["pass_at_beam"]):
        assert f"{100 * x:.1f} %" in block


def test_the_front_page_is_short_and_its_picture_and_links_exist():
    assert len(README.splitlines()) <= 200
    assert f"]({headline.PICTURE})" in README and (ROOT / headline.PICTURE).stat().st_size > 1000
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    assert any(link.startswith("docs/") for link in links)
    assert all((ROOT / link).exists() for link in links), [link for link in links if not (ROOT / link).exists()]
