"""napari plugin for islet-imaging: read DICOM/NIfTI, review, segment and save graft annotations."""
