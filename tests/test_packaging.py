"""Packaging: the console script and the subpackages mapped in by pyproject.toml."""

from __future__ import annotations

import importlib
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import dynacal
from dynacal.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_console_script_is_the_cli():
    (script,) = entry_points(group="console_scripts", name="dynacal")
    assert script.load() is main


@pytest.mark.parametrize("name, folder", [("dynacal.hardware", "hardware"), ("dynacal.fitting", "fitting")])
def test_mapped_subpackages_import(name, folder):
    module = importlib.import_module(name)
    assert Path(module.__file__).parent.name == folder
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert package_dir[name] == folder


def test_dev_extra_has_what_the_tests_need():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("<")[0].split("=")[0].strip() for req in extras["dev"]}
    assert {"pytest", "brian2"} <= names
    assert dynacal.__version__


def test_every_package_folder_is_listed():
    """A non-editable install (CI's ``pip install .``) ships only the listed packages: a new
    subpackage missing from ``[tool.setuptools] packages`` would be absent there."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"dynacal": ROOT / "dynacal", **{name: ROOT / f for name, f in setup["package-dir"].items()}}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((name, *rel)))
    assert found == set(setup["packages"])
