"""The README and docs/ link only to what a clone of the repository holds."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) outside code spans and blocks; the target up to a space or the closing paren.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
EXTERNAL = ("http://", "https://", "mailto:")


def anchors(document: Path) -> set[str]:
    """The anchors GitHub gives the document's headings."""
    headings = re.findall(r"^#+ (.+)$", CODE.sub("", document.read_text()), re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings
    }


def relative_links(document: Path) -> list[str]:
    targets = LINK.findall(CODE.sub("", document.read_text()))
    return [target for target in targets if not target.startswith(EXTERNAL)]


def is_broken(document: Path, target: str) -> bool:
    path_part, _, anchor = target.partition("#")
    linked = (document.parent / path_part).resolve() if path_part else document
    if not linked.is_relative_to(ROOT) or not linked.exists():
        return True
    return bool(anchor) and linked.suffix == ".md" and anchor not in anchors(linked)


def test_there_are_documents_and_they_link_to_each_other() -> None:
    assert ROOT / "docs" / "domain.md" in DOCUMENTS
    assert "docs/domain.md" in relative_links(ROOT / "README.md")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_of_the_repository(document: Path) -> None:
    broken = [target for target in relative_links(document) if is_broken(document, target)]

    assert broken == []
