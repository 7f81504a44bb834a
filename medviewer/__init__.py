"""MedViewer: a desktop DICOM viewer with a built-in diagnosis assistant."""

__version__ = "0.1.0"

from medviewer.core import Cancelled, LoadError, ScanResult, Series, Study, Volume, load, scan  # noqa: E402

__all__ = ["Cancelled", "LoadError", "ScanResult", "Series", "Study", "Volume", "__version__", "load", "scan"]
