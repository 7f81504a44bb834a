"""Files, geometry, volumes: the Qt-free, torch-free core of MedViewer."""

from medviewer.core.errors import Cancelled, LoadError, MedViewerError
from medviewer.core.load import load
from medviewer.core.scan import scan
from medviewer.core.series import ScanResult, Series, Study
from medviewer.core.sources import Refused
from medviewer.core.volume import Volume

__all__ = ["Cancelled", "LoadError", "MedViewerError", "Refused", "ScanResult", "Series", "Study", "Volume",
           "load", "scan"]
