"""Runs the data-driven interaction scripts in ``testdata/`` (see
``interaction.py`` for the format). ``--rewrite`` writes the actual
transcripts back so a behaviour change shows up as a reviewable diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.raft.interaction import InteractionEnv, parse_script, render_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 3


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_interaction_script(script: Path, request: pytest.FixtureRequest) -> None:
    blocks, trailing = parse_script(script)
    env = InteractionEnv()
    actual = [env.run(block.command) for block in blocks]
    if request.config.getoption("--rewrite", default=False):
        script.write_text(render_script(blocks, actual, trailing))
        return
    for block, output in zip(blocks, actual, strict=True):
        assert output == block.expected, f"{script.name}: {block.command}"
