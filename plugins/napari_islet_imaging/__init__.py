"""napari plugin for islet-imaging: read DICOM/NIfTI, review, segment and save graft annotations.

Installed with ``pip install 'islet-imaging[napari]'`` (manifest ``napari.yaml``, plugin name
``islet-imaging``). It is a thin skin over :mod:`islet_imaging`: every number comes from the
core library, the plugin only converts layers to Volumes and back.

Contributions
-------------
* Reader: DICOM folders (every series), DICOMDIR, single DICOM files, NIfTI and NRRD (masks
  as Labels). MR in gray, PET in SUVbw (Bq/mL with a notification when SUV tags are missing)
  with the ``inferno`` colormap and additive blending. Never raises.
* Writers: Labels and Image layers to ``.nii.gz`` / ``.nii`` / ``.nrrd`` on their original grid;
  an existing file is never replaced.
* Sample data: a phantom visit (MR T2, PET in SUV, truth deposit labels).
* Widgets: Study browser, Graft segmentation, Measurements, Save annotation, Timeline.

World coordinates
-----------------
napari world axes are (S, P, L) = DICOM LPS (z, y, x) in mm, for every layer: MR, PET and masks
of a visit overlay wherever their voxel grids are. See :mod:`napari_islet_imaging._layers`.
"""
