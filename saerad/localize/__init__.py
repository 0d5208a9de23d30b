"""Localisation: where in the image each report sentence lives (the last stage before the facades).

Two ways to make a sentence's map, chosen per request:

- ``attribution`` (:mod:`~saerad.localize.attribution`): how much each image region drives the
  sentence's SAE features through the encoder itself; needs only the encoder and the SAE, about a
  second on a CPU;
- ``counterfactual`` (:mod:`~saerad.localize.counterfactual`): remove the sentence's features from
  the class token, render the edit with the bundle's diffusion model, and map what changed; needs a
  diffusion model, tens of seconds on a CPU.

Either way every map is restricted to the body (:mod:`saerad.heatmaps.body`), boxed by
:mod:`saerad.heatmaps.regions` and stored in the report as a single-channel PNG covering the whole
image (:mod:`saerad.heatmaps.pictures`); :mod:`~saerad.localize.report` writes them into a
:class:`~saerad.report.schema.GroundedReport` and records which method made them.

Nothing is imported here, so ``import saerad.localize`` stays cheap.
"""
