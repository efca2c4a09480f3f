"""Lets scrapyd-deploy build the egg; the project is described in pyproject.toml."""

from setuptools import setup

setup()
