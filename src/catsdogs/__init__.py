"""catsdogs: classify pet photos as cat or dog, end to end."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("catsdogs")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
