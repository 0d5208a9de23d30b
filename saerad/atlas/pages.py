"""HTML of the atlas: the index table and one page per feature.

Everything is rendered here, server-side, so the pages read (and print) without JavaScript; the
script only sorts, filters and searches. Every string from a bundle or a dataset (descriptions,
image ids, names) goes through :func:`html.escape`: an LLM-written description is data, not markup.
Links are relative, so the same folder works from ``file://`` and behind ``/atlas/`` on the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from saerad.atlas.plots import histogram_svg, sparkline_svg
from saerad.atlas.profile import FeatureProfile

ASSETS = "assets"


@dataclass(frozen=True)
class Tile:
    """One image on a page: site-relative thumbnail path (None: unreadable) and its activation."""

    image_id: str
    src: str | None
    activation: float | None = None


@dataclass(frozen=True)
class StripRow:
    """One image's counterfactual strip (site-relative paths) and what re-encoding measured."""

    image_id: str
    activation: float
    tiles: dict[str, str]  # original, reconstruction, add, remove, map
    map_of: str  # "add" or "remove": which edit the map shows
    effect: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> {before, after}


@dataclass(frozen=True)
class FeatureEntry:
    """Everything one feature contributes to the site."""

    profile: FeatureProfile
    description: str | None
    score: float | None  # held-out AUROC from the dictionary
    usable: bool
    tracked: str | None  # the condition a label-driven description tracks
    shared_labels: tuple[str, ...]  # conditions the top training reports share (positive)
    train_frequency: float
    train_quantiles: dict[str, float]
    top: tuple[Tile, ...]
    sample: tuple[Tile, ...]
    strips: tuple[StripRow, ...] = ()
    votes: tuple[tuple[str, float, bool], ...] = ()  # (condition, weight, rule usable) of the finding rules it votes in

    @property
    def id(self) -> int:
        return self.profile.id


@dataclass(frozen=True)
class SiteInfo:
    title: str
    bundle: str  # name and version
    dataset: str
    n_images: int
    licence: str
    created: str
    describer: str


def page_name(feature_id: int) -> str:
    return f"f{feature_id:05d}.html"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x >= 0.001 or x == 0 else f"{100 * x:.2f}%"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "–" if x is None else format(x, fmt)


def _head(title: str, prefix: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f'<link rel="stylesheet" href="{prefix}{ASSETS}/atlas.css"></head>'
    )


def _notice(info: SiteInfo, *, dated: bool = False) -> str:
    # Only the index carries the build time: feature pages stay byte-identical across reruns.
    built = f" · built {escape(info.created)}" if dated else ""
    return (
        f'<p class="meta">Bundle <b>{escape(info.bundle)}</b> (trained on data licensed {escape(info.licence)}) · '
        f"images: <b>{escape(info.dataset)}</b> ({info.n_images:,}){built}</p>"
        '<p class="notice">Research use only; not a medical device. Thumbnails are the user\'s own images, '
        "made when this atlas was built.</p>"
    )


def _badge_usable(usable: bool) -> str:
    return '<span class="badge ok">usable</span>' if usable else '<span class="badge no">not usable</span>'


def _tile(tile: Tile, prefix: str) -> str:
    act = "" if tile.activation is None else f'<figcaption>{_num(tile.activation)}</figcaption>'
    cls = "tile" if tile.activation is None or tile.activation > 0 else "tile off"
    title = escape(tile.image_id)
    if tile.src is None:
        return f'<figure class="{cls}" title="{title}"><div class="missing">unreadable</div>{act}</figure>'
    return (
        f'<figure class="{cls}" title="{title}"><img src="{prefix}{escape(tile.src)}" alt="{title}" '
        f'loading="lazy" width="128" height="128">{act}</figure>'
    )


# ------------------------------------------------------------------------------------- index


def index_page(info: SiteInfo, entries: Sequence[FeatureEntry]) -> str:
    rows = "\n".join(_index_row(e) for e in entries)
    n_usable = sum(e.usable for e in entries)
    return f"""{_head(info.title, "")}
<body data-page="index">
<header><h1>{escape(info.title)}</h1>{_notice(info, dated=True)}</header>
<main>
<section class="search" aria-label="search">
  <label for="q">Search by language</label>
  <input id="q" type="search" placeholder="e.g. effusion, pacemaker, enlarged heart" autocomplete="off">
  <p class="hint">Matches feature descriptions, the conditions features track and the conditions those
  words name (rule-labeller vocabulary), then ranks images by the matching features' activations.</p>
  <div id="search-results" hidden>
    <p id="search-summary"></p>
    <h2>Features</h2><ol id="search-features" class="cards"></ol>
    <h2>Images that activate them most</h2><div id="search-images" class="grid"></div>
  </div>
</section>
<section aria-label="features">
  <h2>{len(entries)} features <span class="muted">({n_usable} usable, describer: {escape(info.describer)})</span></h2>
  <div class="controls">
    <input id="filter" type="search" placeholder="filter the table" aria-label="filter the table">
    <label><input type="checkbox" id="only-usable"> usable only</label>
    <label><input type="checkbox" id="only-described"> described only</label>
    <label><input type="checkbox" id="hide-silent"> hide features silent on these images</label>
    <span id="row-count" class="muted"></span>
  </div>
  <table id="feature-table">
  <thead><tr>
    <th data-type="num" aria-sort="ascending">id</th><th data-type="text">description</th>
    <th data-type="text">tracks</th><th data-type="num" title="held-out AUROC of the description">AUROC</th>
    <th data-type="text">usable</th><th data-type="num" title="share of training images where it fires">freq. train</th>
    <th data-type="num" title="share of these images where it fires">freq. here</th>
    <th data-type="num" title="max activation on these images">max</th><th>activations here</th>
  </tr></thead>
  <tbody>
{rows}
  </tbody></table>
</section>
</main>
<script src="search-index.js"></script>
<script src="{ASSETS}/atlas.js"></script>
</body></html>
"""


def _index_row(e: FeatureEntry) -> str:
    p = e.profile
    desc = escape(e.description) if e.description else '<span class="muted">no description</span>'
    label = f"feature {p.id} activation histogram"
    score = "" if e.score is None else f"{e.score:.4f}"
    return (
        f'<tr data-id="{p.id}" data-usable="{int(e.usable)}" data-described="{int(bool(e.description))}" '
        f'data-active="{int(p.n_active > 0)}">'
        f'<td data-v="{p.id}"><a href="features/{page_name(p.id)}">{p.id}</a></td>'
        f'<td class="desc">{desc}</td>'
        f'<td>{escape(e.tracked or "")}</td>'
        f'<td data-v="{score}">{_num(e.score, ".2f")}</td>'
        f'<td data-v="{int(e.usable)}">{_badge_usable(e.usable)}</td>'
        f'<td data-v="{e.train_frequency:.6g}">{_pct(e.train_frequency)}</td>'
        f'<td data-v="{p.frequency:.6g}">{_pct(p.frequency)}</td>'
        f'<td data-v="{p.max:.6g}">{_num(p.max if p.n_active else None)}</td>'
        f"<td>{sparkline_svg(p.hist_counts, label=label)}</td></tr>"
    )


# ------------------------------------------------------------------------------------- feature


def feature_page(info: SiteInfo, e: FeatureEntry, *, prev_id: int | None, next_id: int | None) -> str:
    p = e.profile
    prefix = "../"
    nav = ['<a href="../index.html">index</a>']
    if prev_id is not None:
        nav.append(f'<a rel="prev" href="{page_name(prev_id)}">← #{prev_id}</a>')
    if next_id is not None:
        nav.append(f'<a rel="next" href="{page_name(next_id)}">#{next_id} →</a>')
    desc = escape(e.description) if e.description else '<span class="muted">no description</span>'
    labels = ", ".join(escape(x) for x in e.shared_labels) or "–"
    markers = {f"train q{float(k) * 100:g}": v for k, v in sorted(e.train_quantiles.items(), key=lambda kv: float(kv[0]))}
    hist = (
        histogram_svg(p.hist_counts, p.max, markers=markers, label=f"feature {p.id} activation histogram")
        if p.n_active
        else '<p class="muted">This feature never fires on these images.</p>'
    )
    return f"""{_head(f"Feature {p.id} · {info.title}", prefix)}
<body data-page="feature" data-id="{p.id}">
<header><nav>{" · ".join(nav)}</nav>
<h1>Feature {p.id}</h1><p class="lead">{desc}</p>
<p>{_badge_usable(e.usable)} {f'<span class="badge track">tracks {escape(e.tracked)}</span>' if e.tracked else ""}</p>
{_notice(info)}</header>
<main>
<section><h2>Statistics</h2>
<table class="stats">
<tr><th>held-out AUROC of the description</th><td>{_num(e.score, ".3f")}</td></tr>
<tr><th>conditions shared by its top training reports</th><td>{labels}</td></tr>
<tr><th title="weight per unit of activation; negative = votes against the finding">votes in finding rules</th><td>{_votes(e.votes)}</td></tr>
<tr><th>fires on (training)</th><td>{_pct(e.train_frequency)}</td></tr>
<tr><th>fires on (these images)</th><td>{p.n_active:,} of {p.n_images:,} ({_pct(p.frequency)})</td></tr>
<tr><th>mean / max activation when active (these images)</th><td>{_num(p.mean_active if p.n_active else None)} / {_num(p.max if p.n_active else None)}</td></tr>
<tr><th>training quantiles of active values</th><td>{", ".join(f"q{float(k) * 100:g} {v:.3g}" for k, v in sorted(e.train_quantiles.items(), key=lambda kv: float(kv[0]))) or "–"}</td></tr>
</table></section>
<section><h2>Activation histogram</h2>{hist}</section>
<section><h2>Strongest</h2>{_grid(e.top, prefix, "It never fires on these images.")}</section>
<section><h2>Random sample of these images</h2>
<p class="hint">For contrast: images drawn at random from the whole set, with this feature's activation (grey: 0).</p>
{_grid(e.sample, prefix, "No images.")}</section>
{_strips(e.strips, prefix)}
</main>
<script src="{prefix}{ASSETS}/atlas.js"></script>
</body></html>
"""


def _votes(votes: Sequence[tuple[str, float, bool]]) -> str:
    if not votes:
        return "–"
    return ", ".join(
        f"{escape(c)} {w:+.3g}" + ("" if usable else ' <span class="muted">(rule not used)</span>') for c, w, usable in votes
    )


def _grid(tiles: Sequence[Tile], prefix: str, empty: str) -> str:
    if not tiles:
        return f'<p class="muted">{empty}</p>'
    return '<div class="grid">' + "".join(_tile(t, prefix) for t in tiles) + "</div>"


STRIP_COLUMNS = (("original", "original"), ("reconstruction", "reconstruction"), ("add", "+feature"),
                 ("remove", "−feature"), ("map", "map"))


def _strips(strips: Sequence[StripRow], prefix: str) -> str:
    if not strips:
        return ""
    rows = []
    for s in strips:
        cells = "".join(
            f'<figure class="tile"><img src="{prefix}{escape(s.tiles[key])}" alt="{name}" width="128" height="128">'
            f"<figcaption>{name}{' (' + ('−' if s.map_of == 'remove' else '+') + 'feature)' if key == 'map' else ''}"
            "</figcaption></figure>"
            for key, name in STRIP_COLUMNS
        )
        effect = "; ".join(
            f"{sign}feature {s.effect[mode]['before']:.3g} → {s.effect[mode]['after']:.3g}"
            for mode, sign in (("add", "+"), ("remove", "−")) if mode in s.effect
        )
        rows.append(
            f'<div class="strip" title="{escape(s.image_id)}"><p>activation {s.activation:.3g}'
            f"{' · re-encoded ' + effect if effect else ''}</p><div class=\"grid\">{cells}</div></div>"
        )
    return (
        "<section><h2>Counterfactuals</h2><p class=\"hint\">The diffusion model inverts each image under its "
        "class token and re-renders it with this feature added (its training 0.99 quantile) or removed; the "
        "map is |counterfactual − reconstruction| of the edit that changes the image (remove where the feature "
        "is active, add where it is not). \"re-encoded\" is the feature's activation on the reconstruction → "
        "on the counterfactual.</p>" + "".join(rows) + "</section>"
    )
