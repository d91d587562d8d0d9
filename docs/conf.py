"""Sphinx configuration of detflow's API reference (built from the numpydoc docstrings)."""

from __future__ import annotations

import detflow

project = "detflow"
author = "the detflow authors"
copyright = "2026, the detflow authors"  # noqa: A001 - the name Sphinx reads
release = version = detflow.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode", "numpydoc"]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"  # numpydoc's parameter lists say the types; signatures stay readable
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # autodoc lists the members; numpydoc's tables would repeat them
numpydoc_class_members_toctree = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
