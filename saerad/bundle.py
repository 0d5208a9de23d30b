"""The model bundle: one directory with everything inference needs, and a manifest that vouches for it.

Layout::

    BUNDLE/
      manifest.json        versioned; see :class:`Manifest`
      sae/                 sae.safetensors + sae_config.json (any architecture: saerad.sae.base)
      dictionary.json      saerad.features.FeatureDictionary
      encoder/             optional: a Hugging Face Dinov2 directory (encoder spec "hf:encoder")
      diffusion/           optional: the class-token-conditioned diffusion model
      ood/                 optional: the out-of-distribution check (saerad.ood), calibrated on the
                           bundle's training tokens; a bundle without it loads and reports unchecked

The manifest lists the sha256 of every file. :meth:`Bundle.load` checks the format version, every
checksum and that the parts fit together (encoder dim = SAE input, one dictionary entry per SAE
feature) and refuses anything else with a :class:`~saerad.errors.BundleError`, because a silently
mismatched dictionary produces fluent, confident and wrong reports.

Writers stage the whole bundle in a temporary sibling directory and rename it into place, so a crash
never leaves a half-written bundle where a reader would load it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

import saerad
from saerad.errors import BundleError
from saerad.fileio import sha256_file

if TYPE_CHECKING:
    import torch

    from saerad.encoders.base import ClassTokenEncoder
    from saerad.encoders.store import EmbeddingSet
    from saerad.features.dictionary import FeatureDictionary
    from saerad.ood import TypicalityCheck
    from saerad.sae.base import SparseAutoencoder

log = logging.getLogger(__name__)

FORMAT = "saerad-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAE_DIR = "sae"
DICTIONARY_FILE = "dictionary.json"
ENCODER_DIR = "encoder"
DIFFUSION_DIR = "diffusion"
OOD_DIR = "ood"
DEFAULT_BUNDLE = Path(saerad.__file__).resolve().parent / "default_bundle"


class EncoderEntry(BaseModel):
    """The class-token encoder the SAE was trained on (``describe()`` of the encoder)."""

    spec: str
    dim: int = Field(gt=0)
    describe: dict[str, Any] = Field(default_factory=dict)


class SAEEntry(BaseModel):
    path: str = SAE_DIR
    config: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)  # held-out EV, L0, dead fraction, shrinkage


class DictionaryEntry(BaseModel):
    """Summary of the feature dictionary, so a bundle can be judged without loading it."""

    path: str = DICTIONARY_FILE
    describer: str
    n_features: int
    n_described: int
    n_usable: int
    n_dead: int
    mean_score: float | None = None  # mean held-out AUROC over scored features
    includes_report_text: bool


class DiffusionEntry(BaseModel):
    path: str = DIFFUSION_DIR
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)


class OODEntry(BaseModel):
    """The out-of-distribution check (:mod:`saerad.ood`): where it is and how it was calibrated."""

    path: str = OOD_DIR
    method: str
    threshold: float
    calibration: dict[str, Any] = Field(default_factory=dict)  # images, patients, folds, quantile, margin...


class DataEntry(BaseModel):
    """What the bundle was trained on and the terms it inherits from that data."""

    dataset: str
    description: str = ""
    license: str
    n_images: int = 0
    n_studies: int = 0
    n_patients: int = 0
    splits: dict[str, int] = Field(default_factory=dict)


class ReportDefaults(BaseModel):
    """Feature selection defaults for reports made with this bundle."""

    top_k: int | None = None
    threshold: float = 0.0
    usable_only: bool = True


class Manifest(BaseModel):
    format: Literal["saerad-bundle"] = FORMAT
    format_version: int = FORMAT_VERSION
    name: str
    version: str = "1"
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    software_version: str = saerad.__version__
    research_use_only: bool = True
    encoder: EncoderEntry
    sae: SAEEntry
    dictionary: DictionaryEntry
    diffusion: DiffusionEntry | None = None
    ood: OODEntry | None = None
    data: DataEntry
    report: ReportDefaults = Field(default_factory=ReportDefaults)
    build: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)  # relative posix path -> sha256


class Bundle:
    """A loaded, validated bundle. Use :meth:`load`; the constructor trusts its arguments."""

    def __init__(self, path: Path, manifest: Manifest, sae: SparseAutoencoder, dictionary: FeatureDictionary,
                 ood: TypicalityCheck | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.sae = sae
        self.dictionary = dictionary
        self.ood = ood  # None: the bundle carries no out-of-distribution check

    @property
    def encoder_spec(self) -> str:
        """The encoder spec, with an ``hf:`` path relative to the bundle made absolute."""
        return resolve_encoder_spec(self.manifest.encoder.spec, self.path)

    @property
    def diffusion_dir(self) -> Path | None:
        entry = self.manifest.diffusion
        return None if entry is None else self.path / entry.path

    # ------------------------------------------------------------ what may be used with this bundle
    # The one place that decides whether an encoder, a set of class tokens or a diffusion model fits
    # the bundle. A mismatch would not crash: it would give fluent reports whose features mean
    # something other than what the dictionary says.

    def load_encoder(self, device: str | torch.device = "cpu") -> ClassTokenEncoder:
        """The bundle's encoder on ``device``, checked by :meth:`check_encoder`."""
        from saerad.encoders import load_encoder

        encoder = load_encoder(self.encoder_spec, device=device)
        self.check_encoder(encoder)
        return encoder

    def check_encoder(self, encoder: ClassTokenEncoder) -> None:
        """Refuse an encoder other than the one the SAE was trained behind: its token width, its
        spec (which weights) and its preprocessing (the same weights behind another resize or
        normalisation give other tokens) must be the ones the manifest recorded."""
        d_in = int(self.sae.cfg.d_in)
        if int(encoder.dim) != d_in:
            raise BundleError(
                f"encoder {encoder.spec!r} gives {encoder.dim}-d class tokens but the bundle's SAE expects {d_in}"
            )
        if _normalized_spec(encoder.spec) != _normalized_spec(self.encoder_spec):
            raise BundleError(
                f"encoder {encoder.spec!r} is not the one bundle {self.manifest.name!r} was built with "
                f"({self.encoder_spec!r}); its features would not mean what the dictionary says"
            )
        expected = self.manifest.encoder.describe.get("preprocessing")
        actual = encoder.describe().get("preprocessing")
        if expected is not None and actual is not None and _jsonable(expected) != _jsonable(actual):
            raise BundleError(
                f"encoder {encoder.spec!r} preprocesses images differently from the encoder this bundle "
                "was built with; its features would not mean what the dictionary says"
            )

    def check_tokens(self, tokens: EmbeddingSet) -> None:
        """Refuse stored class tokens (``saerad embed``) of another encoder than the bundle's."""
        d_in = int(self.sae.cfg.d_in)
        if tokens.dim != d_in:
            raise BundleError(f"the class tokens are {tokens.dim}-d but the bundle's SAE expects {d_in}")
        if _normalized_spec(tokens.encoder) != _normalized_spec(self.encoder_spec):
            raise BundleError(
                f"the class tokens come from encoder {tokens.encoder!r}, not from this bundle's "
                f"{self.encoder_spec!r}: embed the images again with --encoder {self.encoder_spec}"
            )

    def check_diffusion(self, token_dim: int, source: str | os.PathLike = "") -> None:
        """Refuse a diffusion model (in ``source``) conditioned on class tokens of another width than the SAE's."""
        d_in = int(self.sae.cfg.d_in)
        if int(token_dim) != d_in:
            raise BundleError(
                f"the diffusion model {str(source)!r} is conditioned on {token_dim}-d class tokens but "
                f"the bundle's SAE works on {d_in}-d ones"
            )

    def info(self) -> dict[str, Any]:
        """Provenance copied into every report."""
        m = self.manifest
        return {
            "name": m.name,
            "version": m.version,
            "format_version": m.format_version,
            "software_version": m.software_version,
            "encoder": m.encoder.spec,
            "sae": {"d_in": m.sae.config.get("d_in"), "d_sae": m.sae.config.get("d_sae")},
            "dictionary": {"describer": m.dictionary.describer, "n_usable": m.dictionary.n_usable},
            "diffusion": None if m.diffusion is None else m.diffusion.config.get("version", "present"),
            "ood_check": None if m.ood is None else m.ood.method,
            "data": m.data.dataset,
            "license": m.data.license,
        }

    @classmethod
    def load(
        cls, path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", verify: bool = True
    ) -> Bundle:
        """Load and validate a bundle; ``None`` means the default bundle embedded in the package."""
        root = bundle_root(path)
        manifest = read_manifest(root)
        if verify:
            verify_files(root, manifest)
        sae, dictionary = _load_parts(root, manifest, device)
        return cls(root, manifest, sae, dictionary, ood=_load_ood(root, manifest, int(sae.cfg.d_in)))


def bundle_root(path: str | os.PathLike | None) -> Path:
    """The bundle directory for ``path``; ``None`` means the embedded default bundle."""
    if path is None:
        if not (DEFAULT_BUNDLE / MANIFEST).is_file():
            raise BundleError(
                "no default bundle is installed in this copy of saerad; build one with "
                "`saerad build --dataset covid-cxr --root ../shared/data/covid-cxr --out BUNDLE` "
                "and pass it with --bundle BUNDLE"
            )
        return DEFAULT_BUNDLE
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory")
    return root


def read_manifest(root: Path) -> Manifest:
    """Parse ``manifest.json``, checking the format and its version before anything else."""
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a saerad bundle: {MANIFEST} is missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{path} is not a saerad bundle manifest (format must be {FORMAT!r})")
    version = raw.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise BundleError(
            f"bundle {root} has format version {version!r}; this saerad ({saerad.__version__}) reads "
            f"version {FORMAT_VERSION}: rebuild the bundle or upgrade saerad"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{path} is invalid: {exc.error_count()} problem(s), first: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest, keyed by relative posix path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
    }


def verify_files(root: Path, manifest: Manifest) -> None:
    """Refuse a bundle whose files are missing or differ from the manifest's checksums."""
    if not manifest.files:
        raise BundleError(f"bundle {root} lists no files in its manifest")
    for rel, expected in manifest.files.items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"bundle {root} is incomplete: {rel} is missing")
        if sha256_file(path) != expected:
            raise BundleError(f"bundle {root} is corrupted: {rel} does not match its checksum")
    for part in (manifest.sae.path, manifest.dictionary.path):
        if not any(rel == part or rel.startswith(part.rstrip("/") + "/") for rel in manifest.files):
            raise BundleError(f"bundle {root}: {part} is not covered by the manifest's checksums")


def _load_parts(root: Path, manifest: Manifest, device: str | torch.device) -> tuple[SparseAutoencoder, FeatureDictionary]:
    from saerad.features.dictionary import FeatureDictionary
    from saerad.sae.architectures import load_sae

    try:
        sae = load_sae(root / manifest.sae.path, device=device).float().eval()
        dictionary = FeatureDictionary.load(root / manifest.dictionary.path)
    except BundleError:
        raise
    except Exception as exc:  # unreadable weights or JSON: the bundle, not the code, is at fault
        raise BundleError(f"bundle {root}: cannot load its parts ({type(exc).__name__}: {exc})") from exc
    check_consistency(manifest, sae, dictionary, root)
    return sae, dictionary


def _load_ood(root: Path, manifest: Manifest, d_in: int) -> TypicalityCheck | None:
    if manifest.ood is None:
        return None
    from saerad.ood import TypicalityCheck

    check = TypicalityCheck.load(root / manifest.ood.path)
    if check.dim != d_in:
        raise BundleError(f"bundle {root}: the out-of-distribution check is for {check.dim}-d tokens, the SAE for {d_in}-d")
    return check


def check_consistency(manifest: Manifest, sae: SparseAutoencoder, dictionary: FeatureDictionary, root: Path | str) -> None:
    """The encoder, SAE and dictionary must describe the same feature space."""
    d_in, d_sae = int(sae.cfg.d_in), int(sae.cfg.d_sae)
    if manifest.encoder.dim != d_in:
        raise BundleError(f"bundle {root}: encoder dim {manifest.encoder.dim} but the SAE expects {d_in}")
    if manifest.dictionary.n_features != d_sae or len(dictionary.features) != d_sae:
        raise BundleError(
            f"bundle {root}: the SAE has {d_sae} features but the dictionary describes "
            f"{len(dictionary.features)} (manifest says {manifest.dictionary.n_features})"
        )
    if sorted(f.id for f in dictionary.features) != list(range(d_sae)):
        raise BundleError(f"bundle {root}: dictionary feature ids are not 0..{d_sae - 1}")
    if manifest.diffusion is not None and not (root_path := Path(root) / manifest.diffusion.path).is_dir():
        raise BundleError(f"bundle {root}: manifest names a diffusion model but {root_path} is missing")


def _normalized_spec(spec: str) -> str:
    """``hf:`` paths compared as resolved paths; other specs ("default") as written."""
    spec = (spec or "").strip()
    return f"hf:{Path(spec[3:]).expanduser().resolve()}" if spec.startswith("hf:") else spec


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def resolve_encoder_spec(spec: str, root: Path) -> str:
    """``hf:encoder`` inside a bundle means ``hf:<bundle>/encoder``; other specs pass through."""
    if spec.startswith("hf:"):
        target = Path(spec[3:])
        if not target.is_absolute():
            return f"hf:{(root / target).resolve()}"
    return spec


def summarize_dictionary(dictionary: FeatureDictionary, *, path: str = DICTIONARY_FILE) -> DictionaryEntry:
    feats = dictionary.features
    scores = [f.description_score for f in feats if f.description_score is not None]
    return DictionaryEntry(
        path=path,
        describer=dictionary.describer,
        n_features=len(feats),
        n_described=sum(1 for f in feats if f.description),
        n_usable=sum(1 for f in feats if f.usable),
        n_dead=sum(1 for f in feats if f.frequency <= 0),
        mean_score=(sum(scores) / len(scores)) if scores else None,
        includes_report_text=any(t.report for f in feats for t in f.top_images),
    )


def write_bundle(
    out: str | os.PathLike,
    *,
    name: str,
    encoder: EncoderEntry,
    sae: SparseAutoencoder,
    dictionary: FeatureDictionary,
    data: DataEntry,
    version: str = "1",
    sae_metrics: dict[str, Any] | None = None,
    report: ReportDefaults | None = None,
    build: dict[str, Any] | None = None,
    encoder_dir: str | os.PathLike | None = None,
    diffusion_dir: str | os.PathLike | None = None,
    diffusion: DiffusionEntry | None = None,
    ood: TypicalityCheck | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete bundle to ``out`` (staged, then renamed into place); returns ``out``.

    ``encoder_dir`` copies a Hugging Face encoder directory into the bundle (spec becomes
    ``hf:encoder``); ``ood`` is the out-of-distribution check calibrated on its training tokens.
    """

    def fill(stage: Path) -> Manifest:
        sae.save(stage / SAE_DIR)
        dictionary.save(stage / DICTIONARY_FILE)
        enc = encoder
        if encoder_dir is not None:
            shutil.copytree(encoder_dir, stage / ENCODER_DIR)
            enc = encoder.model_copy(update={"spec": f"hf:{ENCODER_DIR}"})
        diff = None
        if diffusion_dir is not None:
            shutil.copytree(diffusion_dir, stage / DIFFUSION_DIR)
            diff = (diffusion or DiffusionEntry()).model_copy(update={"path": DIFFUSION_DIR})
        manifest = Manifest(
            name=name,
            version=version,
            encoder=enc,
            sae=SAEEntry(config=_sae_config(sae), metrics=sae_metrics or {}),
            dictionary=summarize_dictionary(dictionary),
            diffusion=diff,
            ood=None if ood is None else _save_ood(ood, stage),
            data=data,
            report=report or ReportDefaults(),
            build=build or {},
        )
        check_consistency(manifest, sae, dictionary, stage)  # never write a bundle load would refuse
        return manifest

    return _stage(Path(out), fill, overwrite=overwrite)


def _save_ood(check: TypicalityCheck, stage: Path) -> OODEntry:
    from saerad.ood import METHOD

    check.save(stage / OOD_DIR)
    return OODEntry(method=METHOD, threshold=round(check.threshold, 6), calibration=check.meta)


def add_ood_check(path: str | os.PathLike, check: TypicalityCheck) -> Path:
    """Add (or replace) the out-of-distribution check of the bundle at ``path``, in place.

    Everything else is copied unchanged into a staged sibling; the manifest gains its ``ood`` entry
    and new checksums, and the result replaces the bundle in one rename, as :func:`write_bundle` does.
    """
    root = bundle_root(path)
    manifest = read_manifest(root)
    verify_files(root, manifest)
    if check.dim != int(manifest.encoder.dim):
        raise BundleError(f"the check is for {check.dim}-d class tokens but bundle {root} uses {manifest.encoder.dim}-d ones")
    old_ood = None if manifest.ood is None else manifest.ood.path

    def fill(stage: Path) -> Manifest:
        for rel in manifest.files:
            if old_ood is not None and (rel == old_ood or rel.startswith(old_ood.rstrip("/") + "/")):
                continue
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, stage / rel)
        return manifest.model_copy(update={"ood": _save_ood(check, stage)})

    return _stage(root, fill, overwrite=True)


def _sae_config(sae: SparseAutoencoder) -> dict[str, Any]:
    return json.loads(json.dumps(sae.cfg.to_json(), default=str))


def _stage(out: Path, fill: Callable[[Path], Manifest], *, overwrite: bool) -> Path:
    """Build a bundle in a temporary sibling of ``out`` via ``fill``, checksum it, rename it in."""
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        manifest = fill(stage)
        manifest = manifest.model_copy(update={"files": checksums(stage)})
        (stage / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("wrote bundle %s (%d files)", out, len(manifest.files))
    return out
