/* saerad feature atlas: table sorting and filtering, language search, page keys.
 * Hand-written, no dependencies; works from file:// (the search index is a script, not a fetch).
 * Data from the bundle is only ever inserted with textContent / attributes, never as HTML. */
(function () {
  "use strict";

  var page = document.body.getAttribute("data-page");
  if (page === "index") {
    initTable();
    initSearch();
  } else if (page === "feature") {
    initFeatureKeys();
  }

  // ------------------------------------------------------------------------------ table

  function initTable() {
    var table = document.getElementById("feature-table");
    if (!table) return;
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

    headers.forEach(function (th, col) {
      var type = th.getAttribute("data-type");
      if (!type) return;
      th.tabIndex = 0;
      th.classList.add("sortable");
      var sort = function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        sortBy(col, type, asc);
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sort(); }
      });
    });

    function key(row, col, type) {
      var cell = row.cells[col];
      var raw = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
      if (raw === "") return null; // missing values sort last in both directions
      return type === "num" ? Number(raw) : raw.toLowerCase();
    }

    function sortBy(col, type, asc) {
      var keyed = rows.map(function (row) { return [key(row, col, type), Number(row.getAttribute("data-id")), row]; });
      keyed.sort(function (a, b) {
        if (a[0] === null || b[0] === null) {
          if (a[0] === b[0]) return a[1] - b[1];
          return a[0] === null ? 1 : -1;
        }
        var c = a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
        return (asc ? c : -c) || a[1] - b[1];
      });
      var frag = document.createDocumentFragment();
      keyed.forEach(function (k) { frag.appendChild(k[2]); });
      tbody.appendChild(frag);
    }

    var filter = document.getElementById("filter");
    var usable = document.getElementById("only-usable");
    var described = document.getElementById("only-described");
    var silent = document.getElementById("hide-silent");
    var count = document.getElementById("row-count");
    var texts = rows.map(function (row) { return row.textContent.toLowerCase(); });

    function apply() {
      var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      rows.forEach(function (row, i) {
        var ok = words.every(function (w) { return texts[i].indexOf(w) >= 0; }) &&
          (!usable.checked || row.getAttribute("data-usable") === "1") &&
          (!described.checked || row.getAttribute("data-described") === "1") &&
          (!silent.checked || row.getAttribute("data-active") === "1");
        row.hidden = !ok;
        if (ok) shown += 1;
      });
      count.textContent = "showing " + shown + " of " + rows.length;
    }
    [filter, usable, described, silent].forEach(function (el) { el.addEventListener("input", apply); });
    apply();
  }

  // ------------------------------------------------------------------------------ search

  function words(text) {
    return String(text || "").toLowerCase().match(/[a-z0-9]+/g) || [];
  }

  function padded(list) {
    return " " + list.join(" ") + " ";
  }

  /** Prepare the index once: word sets of descriptions and the phrases that name each condition. */
  function prepare(index) {
    var names = {};
    index.features.forEach(function (f) {
      f._words = words(f.description);
      f._set = {};
      f._words.forEach(function (w) { f._set[w] = true; });
      f._text = padded(f._words);
      [f.tracked].concat(f.conditions).forEach(function (c) { if (c) names[c] = true; });
    });
    Object.keys(index.mentions || {}).forEach(function (c) { names[c] = true; });
    index._conditions = Object.keys(names).map(function (c) {
      var phrases = [words(c)].concat((index.mentions[c] || []).map(words));
      return { name: c, nameWords: words(c), phrases: phrases.map(padded) };
    });
    return index;
  }

  /** Conditions the query names: a name or mention phrase inside the query, or a query word that is
   *  a word of the condition's name ("effusion" -> Pleural Effusion). */
  function namedConditions(index, qwords) {
    var q = padded(qwords);
    var named = {};
    index._conditions.forEach(function (c) {
      var hit = c.phrases.some(function (p) { return q.indexOf(p) >= 0; }) ||
        qwords.some(function (w) { return w.length >= 4 && c.nameWords.indexOf(w) >= 0; });
      if (hit) named[c.name] = true;
    });
    return named;
  }

  /** Rank features for a query: word scores as in FeatureDictionary.search, plus condition matches. */
  function search(index, query) {
    var qwords = words(query);
    if (!qwords.length) return { features: [], conditions: [] };
    var phrase = padded(qwords);
    var named = namedConditions(index, qwords);
    var hits = [];
    index.features.forEach(function (f) {
      var score = 0;
      qwords.forEach(function (w) {
        if (f._set[w]) score += 1;
        else if (w.length >= 3 && f._words.some(function (d) { return d.indexOf(w) >= 0; })) score += 0.5;
      });
      if (f._text.indexOf(phrase) >= 0) score += 1;
      if (f.tracked && named[f.tracked]) score += 2;
      if (f.conditions.some(function (c) { return named[c]; })) score += 1;
      if (score > 0) hits.push({ f: f, score: score });
    });
    hits.sort(function (a, b) {
      return b.score - a.score || (b.f.usable - a.f.usable) || ((b.f.score || 0) - (a.f.score || 0)) || a.f.id - b.f.id;
    });
    return { features: hits, conditions: Object.keys(named).sort() };
  }

  /** Images ranked by the matching features' activations (each scaled by its feature's max). */
  function rankImages(hits, limit) {
    var byId = {};
    hits.slice(0, 10).forEach(function (h) {
      h.f.images.forEach(function (img) {
        var id = img[0], src = img[1], act = img[2];
        var s = h.score * act / Math.max(h.f.max, 1e-9);
        var e = byId[id] || (byId[id] = { id: id, src: src, score: 0, features: [] });
        e.score += s;
        e.features.push(h.f.id);
      });
    });
    return Object.keys(byId).map(function (k) { return byId[k]; })
      .sort(function (a, b) { return b.score - a.score || (a.id < b.id ? -1 : 1); })
      .slice(0, limit);
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function thumb(src, title, caption) {
    var fig = el("figure", { "class": "tile", title: title });
    fig.appendChild(el("img", { src: src, alt: title, width: "128", height: "128", loading: "lazy" }));
    if (caption !== undefined) fig.appendChild(el("figcaption", {}, caption));
    return fig;
  }

  function initSearch() {
    var input = document.getElementById("q");
    var box = document.getElementById("search-results");
    var summary = document.getElementById("search-summary");
    var list = document.getElementById("search-features");
    var grid = document.getElementById("search-images");
    if (!input) return;
    var index = window.SAERAD_ATLAS;
    if (!index || !index.features) {
      input.disabled = true;
      input.placeholder = "search index missing (search-index.js)";
      return;
    }
    prepare(index);

    function run() {
      var query = input.value.trim();
      list.textContent = "";
      grid.textContent = "";
      if (!query) { box.hidden = true; return; }
      var result = search(index, query);
      box.hidden = false;
      var named = result.conditions.length ? " · conditions: " + result.conditions.join(", ") : "";
      summary.textContent = result.features.length + " feature" + (result.features.length === 1 ? "" : "s") +
        " match \u201c" + query + "\u201d" + named;
      result.features.slice(0, 20).forEach(function (h) {
        var f = h.f;
        var li = el("li", { "class": "card", "data-id": String(f.id) });
        var head = el("p");
        head.appendChild(el("a", { href: f.page }, "#" + f.id));
        head.appendChild(document.createTextNode(" " + (f.description || "(no description)")));
        li.appendChild(head);
        var meta = el("p", { "class": "muted" });
        var bits = ["match " + h.score.toFixed(1)];
        if (f.tracked) bits.push("tracks " + f.tracked);
        if (f.score !== null && f.score !== undefined) bits.push("AUROC " + f.score.toFixed(2));
        bits.push(f.usable ? "usable" : "not usable");
        meta.textContent = bits.join(" · ");
        li.appendChild(meta);
        var strip = el("div", { "class": "mini" });
        f.images.slice(0, 4).forEach(function (img) { strip.appendChild(thumb(img[1], img[0])); });
        li.appendChild(strip);
        list.appendChild(li);
      });
      rankImages(result.features, 12).forEach(function (img) {
        grid.appendChild(thumb(img.src, img.id, "#" + img.features.join(", #")));
      });
    }

    function fromLocation() {
      var m = /[#&?]q=([^&]*)/.exec(window.location.hash || window.location.search || "");
      if (m) input.value = decodeURIComponent(m[1].replace(/\+/g, " "));
    }

    input.addEventListener("input", function () {
      run();
      try {
        history.replaceState(null, "", input.value ? "#q=" + encodeURIComponent(input.value) : "#");
      } catch (e) { /* some browsers refuse history edits on file:// pages: the search still works */ }
    });
    fromLocation();
    run();
  }

  // ------------------------------------------------------------------------------ feature page

  function initFeatureKeys() {
    document.addEventListener("keydown", function (ev) {
      if (ev.target && /^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName)) return;
      var rel = ev.key === "ArrowLeft" ? "prev" : ev.key === "ArrowRight" ? "next" : null;
      var link = rel && document.querySelector('a[rel="' + rel + '"]');
      if (link) window.location.href = link.getAttribute("href");
    });
  }
})();
