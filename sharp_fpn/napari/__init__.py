"""napari plugin (npe2; manifest ``napari.yaml``): the "Segment nuclei" dock widget and a reader
that opens ``tools/predict.py``'s ``*_labels.tif`` files as labels layers.

Install with ``pip install -e .[napari]``; napari then lists the widget under Plugins. Nothing
here is imported by ``import sharp_fpn``, so napari and Qt stay optional.
"""
