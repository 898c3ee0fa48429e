"""videonet-curate: see the repository README."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("videonet-curate")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
