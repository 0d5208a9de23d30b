"""Counterfactual diffusion: what each SAE feature (and so each report sentence) does to the image.

Modules, in pipeline order (docs/method.md#counterfactual-diffusion):

- :mod:`~saerad.diffusion.model`: the class-token-conditioned pixel-space UNet, its DDIM schedulers,
  save/load (``config.json`` + ``model.safetensors`` + ``metadata.json``: the bundle's
  ``diffusion/`` directory);
- :mod:`~saerad.diffusion.data`: (image, class token) training pairs and the patient-level split;
- :mod:`~saerad.diffusion.train`: the training loop (EMA, checkpoints with exact resume, samples);
- :mod:`~saerad.diffusion.invert`: deterministic DDIM inversion and sampling;
- :mod:`~saerad.diffusion.intervene`: SAE edits of the class token, rendered in one batch;
- :mod:`~saerad.diffusion.maps`: difference maps restricted to the body, their boxes;
- :mod:`~saerad.diffusion.metrics`: composition, effectiveness, selectivity;
- :mod:`~saerad.diffusion.figure`: the paper-style intervention figure.

Report sentences get their counterfactual maps through :mod:`saerad.localize.counterfactual`.

Nothing is imported here, so ``import saerad.diffusion`` stays cheap.
"""
