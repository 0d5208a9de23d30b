"""METEOR 1.5 through the jar that ships with ``pycocoevalcap`` (the coco-caption setup).

One Java process per run, reports streamed through it:

* ``SCORE ||| reference ||| hypothesis`` returns one line of 23 sufficient statistics per pair
  (lengths, function words, matches per module, chunks). The lines are written by a feeder thread
  while the main thread reads answers, so 3,858 pairs cost one round trip's latency, not 3,858.
* ``EVAL ||| stats ||| stats ...`` returns every segment score and the corpus score, exactly as
  ``pycocoevalcap.meteor.Meteor.compute_score`` reports it (same jar, same ``-l en -norm`` options).

The corpus score is a function of the *summed* statistics, so it - and every bootstrap resample -
is computed in Python by :func:`meteor_from_stats` from (weighted) sums of the per-pair
statistics; a test checks that this reproduces the jar's own EVAL to 1e-12. Java is never run
500 times, and runs use only SCORE (EVAL's one huge line is slow to parse).

Where no Java runtime exists, :func:`meteor_unavailable_reason` says why and the runner writes that
reason in the METEOR column instead of a number.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from saerad.errors import ConfigError

STATS_LENGTH = 23
# Meteor 1.5 "default" task parameters for English (alpha, beta, gamma, delta) and module weights
# (exact, stem, synonym, paraphrase); verified against the jar's own EVAL in the tests.
ALPHA, BETA, GAMMA, DELTA = 0.85, 0.20, 0.60, 0.75
MODULE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)


def meteor_jar() -> Path:
    """Path of ``meteor-1.5.jar`` inside the installed pycocoevalcap package."""
    import pycocoevalcap

    for root in pycocoevalcap.__path__:
        jar = Path(root) / "meteor" / "meteor-1.5.jar"
        if jar.is_file():
            return jar
    raise ConfigError("pycocoevalcap is installed without meteor/meteor-1.5.jar")


def meteor_unavailable_reason(java: str = "java") -> str | None:
    """``None`` when METEOR can run, else a one-line reason (shown in the METEOR column)."""
    if shutil.which(java) is None:
        return f"no Java runtime ({java!r} not on PATH; install e.g. Debian's default-jre-headless)"
    try:
        jar = meteor_jar()
    except (ImportError, ConfigError) as exc:
        return str(exc)
    if not (jar.parent / "data" / "paraphrase-en.gz").is_file():
        return f"{jar.parent / 'data' / 'paraphrase-en.gz'} is missing"
    return None


def _clean(text: str) -> str:
    # The protocol separates fields with "|||" and lines with newlines.
    return " ".join(text.replace("|||", " ").split())


class MeteorJava:
    """A running METEOR 1.5 process (use as a context manager)."""

    def __init__(self, java: str = "java", memory: str = "2G") -> None:
        reason = meteor_unavailable_reason(java)
        if reason:
            raise ConfigError(f"METEOR unavailable: {reason}")
        jar = meteor_jar()
        cmd = [java, "-jar", f"-Xmx{memory}", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc = subprocess.Popen(
            cmd,
            cwd=jar.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> MeteorJava:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        proc = self._proc
        if proc.poll() is None:
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()

    def _readline(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise ConfigError("METEOR's Java process ended unexpectedly (out of memory? see -Xmx / SAERAD_METEOR_MEMORY)")
        return line.strip()

    def _stream(self, lines: Sequence[str], n_answers: int) -> list[str]:
        """Write ``lines`` from a feeder thread while reading ``n_answers`` answer lines."""
        assert self._proc.stdin is not None
        stdin = self._proc.stdin
        error: list[BaseException] = []

        def feed() -> None:
            try:
                for line in lines:
                    stdin.write(line + "\n")
                stdin.flush()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                error.append(exc)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        answers = [self._readline() for _ in range(n_answers)]
        feeder.join()
        if error:
            raise ConfigError(f"could not talk to METEOR's Java process: {error[0]}")
        return answers

    def stats(self, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Per-pair sufficient statistics ``(N, 23)``."""
        if len(hypotheses) != len(references):
            raise ValueError("hypotheses and references differ in length")
        lines = [f"SCORE ||| {_clean(ref)} ||| {_clean(hyp)}" for hyp, ref in zip(hypotheses, references, strict=True)]
        answers = self._stream(lines, len(lines))
        out = np.array([[float(v) for v in answer.split()] for answer in answers], dtype=np.float64)
        if out.size and out.shape[1] != STATS_LENGTH:
            raise ConfigError(f"unexpected METEOR statistics line with {out.shape[1]} fields")
        return out.reshape(len(lines), STATS_LENGTH)

    def submit(self, hypotheses: Sequence[str], references: Sequence[str]) -> Future:
        """Score in a background thread; ``.result()`` gives ``(stats, segment scores, corpus score)``.

        Requests are served one after another (one Java process), so a run may submit every
        system's pairs up front and collect them later.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteor")

        def job() -> tuple[np.ndarray, np.ndarray, float]:
            stats = self.stats(hypotheses, references)
            # Java's EVAL of a 3,858-pair line costs seconds of parsing; the Python aggregate is
            # identical (tested against EVAL), so segment and corpus scores are computed here.
            return stats, meteor_from_stats(stats[:, None, :]), float(meteor_from_stats(stats))

        return self._executor.submit(job)

    def evaluate(self, stats: np.ndarray) -> tuple[np.ndarray, float]:
        """Java's own segment scores and corpus score for statistics from :meth:`stats`."""
        if len(stats) == 0:
            return np.zeros(0), 0.0
        fields = " ||| ".join(" ".join(repr(float(v)) for v in row) for row in stats)
        answers = self._stream([f"EVAL ||| {fields}"], len(stats) + 1)
        return np.array([float(a) for a in answers[:-1]]), float(answers[-1])


def meteor_from_stats(stats: np.ndarray) -> np.ndarray:
    """Corpus METEOR from per-pair statistics ``(..., N, 23)`` -> ``(...)``.

    Reproduces MeteorStats aggregation (chunks of a perfect one-chunk match are not added) and
    MeteorScorer.computeMetrics (weighted precision/recall, F-mean, fragmentation penalty).
    """
    stats = np.asarray(stats, dtype=np.float64)
    return _score_summed(_summable(stats).sum(axis=-2))


def meteor_from_weighted(stats: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Corpus METEOR of bootstrap resamples: ``weights (B, N)`` draw counts -> ``(B,)``."""
    return _score_summed(np.asarray(weights, dtype=np.float64) @ _summable(stats))


def _summable(stats: np.ndarray) -> np.ndarray:
    """Per-pair statistics as they are summed: chunks zeroed for perfect one-chunk matches."""
    stats = np.array(stats, dtype=np.float64, copy=True)
    modules = stats[..., 4:20].reshape(*stats.shape[:-1], 4, 4)  # (…, module, [tc, rc, tf, rf])
    test_total = modules[..., 0].sum(-1) + modules[..., 2].sum(-1)
    ref_total = modules[..., 1].sum(-1) + modules[..., 3].sum(-1)
    perfect = (test_total == stats[..., 0]) & (ref_total == stats[..., 1]) & (stats[..., 20] == 1.0)
    stats[..., 20] = np.where(perfect, 0.0, stats[..., 20])
    return stats


def _score_summed(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    test_len, ref_len, test_fn, ref_fn = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    modules = s[..., 4:20].reshape(*s.shape[:-1], 4, 4)
    w = np.asarray(MODULE_WEIGHTS)
    test_matches = (modules[..., 0] * w).sum(-1) * DELTA + (modules[..., 2] * w).sum(-1) * (1 - DELTA)
    ref_matches = (modules[..., 1] * w).sum(-1) * DELTA + (modules[..., 3] * w).sum(-1) * (1 - DELTA)
    test_weighted_len = DELTA * (test_len - test_fn) + (1 - DELTA) * test_fn
    ref_weighted_len = DELTA * (ref_len - ref_fn) + (1 - DELTA) * ref_fn
    test_total = modules[..., 0].sum(-1) + modules[..., 2].sum(-1)
    ref_total = modules[..., 1].sum(-1) + modules[..., 3].sum(-1)
    chunks = s[..., 20]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = test_matches / test_weighted_len
        recall = ref_matches / ref_weighted_len
        fmean = 1.0 / ((1 - ALPHA) / precision + ALPHA / recall)
        perfect = (test_total == test_len) & (ref_total == ref_len) & (chunks == 1.0)
        frag = np.where(perfect, 0.0, chunks / ((test_total + ref_total) / 2.0))
        score = fmean * (1.0 - GAMMA * np.power(frag, BETA))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))
