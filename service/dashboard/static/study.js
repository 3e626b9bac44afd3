// One study, live: polls /api/v1/studies/{id} every 2 s; trials and plots follow its counts.
"use strict";

(() => {
  const { el, fmtNumber, fmtDuration, getJSON } = AT;
  const studyId = document.body.dataset.studyId;
  const api = `/api/v1/studies/${studyId}`;
  const FINAL = ["completed", "failed", "cancelled"];
  const TRIAL_LIMIT = 1000;

  let study = null;
  let trials = [];
  let trialsTotal = 0;
  let trialsSignature = null;
  let plotsSignature = null;
  let plotsBusy = false;
  let trialsLoaded = Promise.resolve();
  let plotsFetchedAt = 0;
  let bestSignature = null;
  let sortKey = "number";
  let sortDir = 1;

  const text = (id, value) => {
    document.getElementById(id).textContent = value;
  };

  // ---- study header and progress ------------------------------------------------------
  function renderStudy() {
    document.title = `${study.name} · adamp-tune`;
    text("study-name", study.name);
    const badge = document.getElementById("study-status");
    badge.textContent = study.status;
    badge.className = `status ${study.status}`;
    const facts = [
      ["owner", study.owner],
      ["workload", study.workload],
      ["metric", study.metric ? `${study.metric} (${study.direction})` : study.direction],
      ["optimizer", study.optimizer],
      ["sampler / pruner", `${study.sampler} / ${study.pruner}`],
      ["max concurrent", study.max_concurrent],
      ["resources", `${fmtNumber(study.resources.gpus)} GPU, ${fmtNumber(study.resources.cpus)} CPU per trial`],
      ["elapsed", fmtDuration(study.elapsed_s)],
      ["fixed", JSON.stringify(study.fixed)],
    ];
    if (study.stop_reason) facts.push(["stop reason", study.stop_reason]);
    if (study.error) facts.push(["error", study.error]);
    document.getElementById("study-facts").replaceChildren(
      ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
    );
    const c = study.counts;
    for (const state of ["complete", "running", "waiting", "pruned", "fail"]) {
      text(`count-${state}`, c[state]);
      if (state !== "waiting") {
        const share = study.n_trials ? (100 * c[state]) / study.n_trials : 0;
        document.getElementById(`bar-${state}`).style.width = `${Math.min(100, share)}%`;
      }
    }
    text("count-total", study.n_trials);
  }

  // ---- trials table -------------------------------------------------------------------
  function paramKeys() {
    const keys = new Set(Object.keys(study.search_space || {}));
    for (const t of trials) Object.keys(t.params).forEach((k) => keys.add(k));
    return [...keys];
  }

  function columns() {
    const cols = [
      { key: "number", label: "#", get: (t) => t.number },
      { key: "state", label: "state", get: (t) => t.state },
      { key: "value", label: study.metric || "value", get: (t) => t.value, num: true },
    ];
    for (const p of paramKeys()) {
      cols.push({ key: `param:${p}`, label: p, get: (t) => t.params[p], num: true });
    }
    cols.push(
      { key: "duration", label: "duration", get: (t) => t.duration_s, fmt: fmtDuration },
      {
        key: "node",
        label: "node",
        get: (t) => (t.node ? t.node.hostname || t.node.node_ip || t.node.node_id || "" : ""),
      },
      { key: "gpus", label: "GPU ids", get: (t) => t.gpu_ids.join(",") },
      {
        key: "sif",
        label: "scale-inv. fraction",
        get: (t) => t.scale_invariant_fraction,
        num: true,
      },
    );
    return cols;
  }

  function compare(a, b) {
    const missing = (v) => v === null || v === undefined || v === "";
    if (missing(a) && missing(b)) return 0;
    if (missing(a)) return 1; // empty cells last, whatever the direction
    if (missing(b)) return -1;
    if (typeof a === "number" && typeof b === "number") return sortDir * (a - b);
    return sortDir * String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function renderTrials() {
    const cols = columns();
    const col = cols.find((c) => c.key === sortKey) || cols[0];
    const head = document.querySelector("#trials thead tr");
    head.replaceChildren(
      ...cols.map((c) => {
        const arrow = c.key === col.key ? (sortDir > 0 ? " ▲" : " ▼") : "";
        const th = el("th", { className: "sort", dataset: { key: c.key }, title: "sort" }, c.label + arrow);
        th.addEventListener("click", () => {
          sortDir = c.key === sortKey ? -sortDir : 1;
          sortKey = c.key;
          renderTrials();
        });
        return th;
      }),
    );
    const rows = [...trials].sort((a, b) => compare(col.get(a), col.get(b)) || a.number - b.number);
    const best = study.best_trial ? study.best_trial.number : null;
    document.querySelector("#trials tbody").replaceChildren(
      ...rows.map((t) =>
        el(
          "tr",
          { className: t.number === best ? "best" : "", dataset: { number: String(t.number), state: t.state } },
          ...cols.map((c) => {
            const v = c.get(t);
            const shown = c.fmt ? c.fmt(v) : c.num ? fmtNumber(v) : v;
            const td = el("td", { className: c.num ? "num" : "" }, shown ?? "");
            if (c.key === "state" && t.error) td.title = t.error;
            return td;
          }),
        ),
      ),
    );
    text(
      "trials-note",
      trialsTotal > trials.length ? `(first ${trials.length} of ${trialsTotal})` : `(${trialsTotal})`,
    );
  }

  async function refreshTrials() {
    const page = await getJSON(`${api}/trials`, { limit: TRIAL_LIMIT, intermediate: "false" });
    trials = page.items;
    trialsTotal = page.total;
    renderTrials();
  }

  // ---- best configuration -------------------------------------------------------------
  async function refreshBest() {
    const best = await getJSON(`/dashboard-api/studies/${studyId}/best`);
    if (best.python === null) return;
    text("best-summary", `trial ${best.trial}: ${study.metric || "value"} = ${fmtNumber(best.value)}`);
    text("best-python", best.python);
    document.getElementById("copy-python").hidden = false;
    const link = document.getElementById("best-checkpoint");
    link.hidden = best.checkpoint === null;
    if (best.checkpoint !== null) link.href = best.checkpoint;
  }

  document.getElementById("copy-python").addEventListener("click", async (ev) => {
    const code = document.getElementById("best-python").textContent;
    try {
      await navigator.clipboard.writeText(code);
      ev.target.textContent = "Copied";
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(document.getElementById("best-python"));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      ev.target.textContent = "Selected: press Ctrl+C";
    }
    window.setTimeout(() => {
      ev.target.textContent = "Copy";
    }, 2000);
  });

  // ---- plots --------------------------------------------------------------------------
  function plotBox(plot) {
    let box = document.getElementById(`plot-box-${plot.key}`);
    if (!box) {
      box = el(
        "figure",
        { id: `plot-box-${plot.key}`, className: "plot-box" },
        el("figcaption", {}, plot.title),
        el("p", { className: "muted note" }),
        el("div", { id: `plot-${plot.key}`, className: "plot", dataset: { key: plot.key } }),
      );
      document.getElementById("plots").append(box);
    }
    return box;
  }

  function renderPlots(answer) {
    text("plots-note", answer.note || "");
    for (const plot of answer.plots) {
      const box = plotBox(plot);
      const div = box.querySelector(".plot");
      box.querySelector(".note").textContent = plot.note || "";
      if (plot.figure === null) {
        if (div.data) Plotly.purge(div);
        div.hidden = true;
        continue;
      }
      div.hidden = false;
      const layout = Object.assign({}, plot.figure.layout, { autosize: true, height: 420 });
      Plotly.react(div, plot.figure.data, layout, { responsive: true, displaylogo: false });
    }
  }

  async function refreshPlots(signature) {
    plotsBusy = true;
    try {
      text("plots-note", plotsSignature === null ? "(computing…)" : "");
      // Plots drawn from the trials first; those that fit a model (importances, contours)
      // take seconds on big studies and follow.
      const base = `/dashboard-api/studies/${studyId}/plots`;
      renderPlots(await getJSON(`${base}?group=fast`));
      const slow = await getJSON(`${base}?group=slow`);
      renderPlots(slow);
      if (slow.stale) {
        // A running study's plots are recomputed at most once per a few times their cost.
        text("plots-note", `(plots as of ${Math.round(slow.age_s)} s ago)`);
      }
      plotsSignature = signature;
      plotsFetchedAt = Date.now();
      document.getElementById("plots").dataset.nComplete = String(slow.n_complete);
    } finally {
      plotsBusy = false;
    }
  }

  // ---- the loop -----------------------------------------------------------------------
  async function refresh() {
    study = await getJSON(api);
    renderStudy();
    const c = study.counts;
    const signature = [c.complete, c.running, c.waiting, c.pruned, c.fail, study.status].join("/");
    if (signature !== trialsSignature) {
      // Table, best trial and plots load in the background: the header never waits on them.
      trialsSignature = signature;
      trialsLoaded = refreshTrials().catch(() => {
        trialsSignature = null;
      });
    }
    const bestNow = study.best_trial ? `${study.best_trial.number}` : null;
    if (bestNow !== bestSignature) {
      bestSignature = bestNow;
      refreshBest().catch(() => {
        bestSignature = null;
      });
    }
    const finished = `${c.complete}/${c.pruned}/${c.fail}/${c.running}`;
    const ended = FINAL.includes(study.status);
    const due = ended || Date.now() - plotsFetchedAt > 5000;
    if (finished !== plotsSignature && !plotsBusy && due) {
      // After the table: computing plots keeps the server busy for seconds on big studies.
      plotsBusy = true;
      trialsLoaded
        .then(() => refreshPlots(finished))
        .catch(() => {
          plotsSignature = null;
          plotsBusy = false;
        });
    }
  }

  const loop = AT.poll(refresh, 2000);
})();
