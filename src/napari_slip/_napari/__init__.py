"""The napari plugin: a thin Qt client of :mod:`napari_slip.core`."""
