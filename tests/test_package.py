"""Tests of the package surface: exported names, version and the README example."""

import doctest
import importlib.metadata
import re
from pathlib import Path

import ocformer

README = Path(__file__).parents[1] / "README.md"


class MarkdownParser(doctest.DocTestParser):
    """Reads Markdown code fences as blank lines, so that the closing fence right
    after an example's output does not count as part of that output."""

    def get_doctest(self, string, globs, name, filename, lineno):
        unfenced = re.sub(r"(?m)^[ \t]*```.*$", "", string)
        return super().get_doctest(unfenced, globs, name, filename, lineno)


def test_every_exported_name_exists():
    """Each name in ocformer.__all__ is an attribute of the package."""
    missing = [name for name in ocformer.__all__ if not hasattr(ocformer, name)]

    assert missing == []


def test_version_matches_the_installed_metadata():
    """ocformer.__version__ is the version pyproject.toml declares."""
    assert ocformer.__version__ == importlib.metadata.version("ocformer")


def test_readme_python_example_runs():
    """The README's >>> example exists and prints what it shows."""
    results = doctest.testfile(
        str(README),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        parser=MarkdownParser(),
        verbose=False,
    )

    assert results.attempted > 0, "README.md has no >>> example"
    assert results.failed == 0
