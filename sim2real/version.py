"""The package version, in a module of its own so that any module can read it without
importing the ``sim2real`` package's lazy exports (``sim2real.Encoder``, ``sim2real.Policy``).

Example:
    >>> from sim2real.version import __version__
    >>> __version__.count(".")
    2
"""

__version__ = "0.1.0"
