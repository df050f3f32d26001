"""Everything that touches files or servers: DICOM discovery and loading, NIfTI/NRRD, SEG, PACS."""
