"""What a user sees of the package before running it: metadata, license, and README links.

The README's and docs' relative links must lead to files the sdist carries (MANIFEST.in adds
docs/, CHANGELOG.md, LICENSE and the benchmark scripts), so they work in the unpacked sdist as
well as on GitHub.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
IN_SDIST = ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml")  # and see MANIFEST.in


def _project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def test_license_is_an_spdx_string_with_its_file() -> None:
    project = _project()
    assert project["license"] == "MIT"  # the table form warns on every build until 2027
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the tidal developers\n")


def test_classifiers_match_what_is_supported() -> None:
    project = _project()
    classifiers = project["classifiers"]
    assert isinstance(classifiers, list)
    assert "Typing :: Typed" in classifiers and (ROOT / "src/tidal/py.typed").exists()
    assert "Operating System :: POSIX :: Linux" in classifiers
    versions = sorted(c.rsplit(" ", 1)[1] for c in classifiers if re.search(r"3\.\d+$", c))
    assert versions == ["3.11", "3.12", "3.13"]
    assert project["requires-python"] == ">=3.11"
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions


def test_readme_and_docs_links_resolve_in_the_sdist() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue  # other sites, and anchors in the page
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.name}: broken link {target}"
            relative = path.relative_to(ROOT).as_posix()
            in_sdist = relative in IN_SDIST or relative.startswith(("docs/", "src/"))
            in_sdist |= relative.startswith("benchmarks/") and relative.endswith((".py", ".md"))
            assert in_sdist, f"{page.name}: {target} is not in the sdist (see MANIFEST.in)"
