"""Dataset loaders. Each returns a list of :class:`~saerad.datasets.base.Study`.

Use :func:`load_dataset` with one of :data:`DATASETS`; loaders import lazily so that listing a
folder never pulls in pandas-sized dependencies.
"""

from __future__ import annotations

from pathlib import Path

from saerad.datasets.base import Study

DATASETS = ("folder", "covid-cxr", "mimic-cxr", "iu-xray", "nih-cxr14")


def load_dataset(name: str, root: str | Path, **kwargs) -> list[Study]:
    """Load dataset ``name`` from ``root``; raises :class:`~saerad.errors.ConfigError` if unknown."""
    from saerad.errors import ConfigError

    root = Path(root)
    if name == "folder":
        from saerad.datasets.folder import load_folder

        return load_folder(root, **kwargs)
    if name == "covid-cxr":
        from saerad.datasets.covid_cxr import load_covid_cxr

        return load_covid_cxr(root, **kwargs)
    if name == "mimic-cxr":
        from saerad.datasets.mimic_cxr import load_mimic_cxr

        return load_mimic_cxr(root, **kwargs)
    if name == "iu-xray":
        from saerad.datasets.iu_xray import load_iu_xray

        return load_iu_xray(root, **kwargs)
    if name == "nih-cxr14":
        from saerad.datasets.nih_cxr14 import load_nih_cxr14

        return load_nih_cxr14(root, **kwargs)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "Study", "load_dataset"]
