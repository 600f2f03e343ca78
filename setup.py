"""The package list, which pyproject.toml cannot express: our three packages as found, plus the project's
top-level templates/ shipped as `sandboxctl.templates` (pyproject.toml maps the folder and its files), so an
installed wheel renders the same pages as a source tree. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["sandboxctl*", "providers*", "executor*"]), "sandboxctl.templates"])
