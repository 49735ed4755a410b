"""The README is a front page and the manual lives in docs/ (issue 24): the README
stays short, shows the test command CI runs, and neither it nor the manual names a
path of the repository's surroundings. The manual's links are checked by its build
(`mkdocs build --strict` in .ci/run)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    headings = [line for line in lines if line.startswith("## ")]
    # where the data comes from comes before the main command: offline users need it first
    assert headings.index("## Where the data comes from") < headings.index("## The main command")


def test_the_readme_shows_the_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == "python3 -m pytest -q"
    assert re.search(rf"^{re.escape(ci)}\s", (ROOT / "README.md").read_text(), flags=re.MULTILINE)


def test_no_page_names_the_repositorys_surroundings():
    for page in PAGES:
        text = page.read_text()
        assert "../shared" not in text and "/work/" not in text, page.name


def test_every_page_the_readme_links_exists():
    for target in re.findall(r"\]\((docs/[^)#]+)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).is_file(), target
