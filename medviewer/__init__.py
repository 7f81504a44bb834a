"""MedViewer: a desktop DICOM viewer with a built-in diagnosis assistant."""

from medviewer.core import Cancelled, LoadError, ScanResult, Series, Study, Volume, load, scan  # noqa: E402
from medviewer.version import __version__

__all__ = ["Cancelled", "LoadError", "ScanResult", "Series", "Study", "Volume", "__version__", "load", "scan"]
