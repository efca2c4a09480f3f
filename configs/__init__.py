"""Packaged configuration files, read with ``pkgutil.get_data("configs", ...)``."""
