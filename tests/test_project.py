"""The promises the README makes about set-up stay true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["bash scripts/setup.sh", "bash scripts/test.sh"]
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "setup.sh --no-demo" in (ROOT / "scripts" / "test.sh").read_text()
    assert "examples/images" in (ROOT / "scripts" / "setup.sh").read_text()
    assert sorted(p.suffix for p in (ROOT / "examples" / "images").iterdir()) == [".jpg"] * 6


def test_readme_states_that_no_official_weights_exist():
    readme = (ROOT / "README.md").read_text()
    assert "No official trained BPCLIP weights exist" in readme
    assert "from the paper" in readme and "Our own measurements" in readme
