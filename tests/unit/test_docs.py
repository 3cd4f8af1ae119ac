"""The docs stay true: every generated file matches a fresh rendering from its source, every
setting is described, the man pages are clean roff, the design names tests and scenarios
that exist, and nothing points outside the repository."""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from firmware import config
from hil.scenarios import SCENARIOS
from host_tools import agent_config, docgen

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rel", sorted(docgen.pages()))
def test_generated_file_is_fresh(rel):
    on_disk = ROOT / rel
    assert on_disk.exists() and on_disk.read_text() == docgen.pages()[rel](), (
        f"{rel} is stale: run `{docgen.REGENERATE}` and commit the result")


def _schema_classes() -> list[type]:
    """Every class of either schema that declares settings."""
    return [cls for module in (config, agent_config) for cls in vars(module).values()
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__
            and any("doc" in f.metadata for f in dataclasses.fields(cls))]


def test_every_setting_has_a_description_and_a_place_in_the_reference():
    documented = {cls for _, cls, _, _ in docgen.appliance_sections() + docgen.agent_sections()}
    assert set(_schema_classes()) <= documented, "a schema class is missing from host_tools/docgen.py's sections"
    bare = [f"{cls.__name__}.{f.name}" for cls in _schema_classes() for f in dataclasses.fields(cls)
            if not f.metadata.get("doc")]
    assert bare == [], f"settings without a description (setting(..., doc=...)): {bare}"
    seconds = [f"{cls.__name__}.{f.name}" for cls in _schema_classes() for f in dataclasses.fields(cls)
               if f.type == "float" and not f.metadata.get("unit")]
    assert seconds == [], f"numbers without a unit (setting(..., unit=...)): {seconds}"


@pytest.mark.parametrize("page", sorted(p for p in docgen.pages() if p.startswith("docs/man/")))
def test_man_page_is_clean_roff(page):
    done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(ROOT / page)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_stale_file_is_named_with_the_command_that_regenerates_it(tmp_path, capsys, monkeypatch):
    for rel, render in docgen.pages().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(render())
    (tmp_path / "docs/config.md").write_text("old\n")
    assert docgen.stale(tmp_path) == ["docs/config.md"]
    monkeypatch.setattr(docgen, "ROOT", tmp_path)
    assert docgen.main(["--check"]) == 1
    assert f"docs/config.md: stale; run `{docgen.REGENERATE}`" in capsys.readouterr().err


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*")), *sorted((ROOT / "examples").glob("*.toml"))]


def test_nothing_in_the_docs_points_outside_the_repository():
    for path in _docs():
        if path.is_file() and path.suffix != ".png":  # a screenshot points nowhere
            text = path.read_text()
            assert "../shared" not in text and "/work/" not in text, path


def test_the_design_names_tests_and_scenarios_that_exist():
    design = (ROOT / "docs" / "design.md").read_text()
    tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", design)
    scenarios = re.findall(r"HIL `([a-z0-9-]+)`", design)
    assert len(tests) >= 10 and len(scenarios) >= 10
    for file, name in tests:
        assert re.search(rf"^\s*(async )?def {name}\(", (ROOT / file).read_text(), re.M), f"{file}::{name}"
    assert sorted(set(scenarios) - set(SCENARIOS)) == []
    for rule in range(1, 11):
        assert re.search(rf"^### Rule {rule}\b", design, re.M), f"rule {rule} has no section"


def test_every_image_the_docs_show_is_in_the_repository():
    pages = [p for p in _docs() if p.suffix == ".md"]
    shown = [(page, target) for page in pages for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text())]
    assert ("status-page.png" in {t for _, t in shown}), "docs/operator.md shows the status page"
    for page, target in shown:
        assert (page.parent / target).is_file(), f"{page.relative_to(ROOT)} shows {target}, which is missing"
