"""Networking with PACS nodes: DIMSE (pynetdicom) and DICOMweb (dicomweb-client). Qt-free."""
