"""Maps over an X-ray, whoever made them: the body they may point into, their boxes, their pictures.

A map is a 2-D array over the WHOLE original image (any resolution with the image's aspect), larger
= stronger. The makers of maps (encoder attribution and diffusion counterfactuals in
:mod:`saerad.localize`, the difference maps of :mod:`saerad.diffusion.intervene`) all hand theirs
to these modules, so every map in a report is restricted, boxed and drawn the same way:

- :mod:`~saerad.heatmaps.body`: an intensity-based body mask, so image borders, collimation
  edges and burned-in text cannot be where a finding "lives";
- :mod:`~saerad.heatmaps.regions`: threshold -> connected components -> boxes (0..1 of the image);
- :mod:`~saerad.heatmaps.pictures`: the single-channel heatmap PNG and the optional overlay.

numpy, scipy, scikit-image and PIL only: no model is imported here.
"""
