"""Reports and export: PDF, PNG, DICOM SEG/SR/SC, anonymised copies. Never imports Qt widgets."""
