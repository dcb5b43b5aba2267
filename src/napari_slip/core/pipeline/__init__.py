"""From an image and a prompt to labels: images, proposal sources, crops, scoring,
selection, results, the per-image session and the :class:`Segmenter`."""
