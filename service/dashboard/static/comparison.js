// One comparison, live: polls /api/v1/comparisons/{id} every 3 s; the plots follow its report.
"use strict";

(() => {
  const { el, fmtNumber, fmtDuration, getJSON, poll } = AT;
  const comparisonId = document.body.dataset.comparisonId;
  const api = `/api/v1/comparisons/${comparisonId}`;
  const FINAL = ["completed", "failed", "cancelled"];
  let plotsSignature = null;

  const text = (id, value) => {
    document.getElementById(id).textContent = value;
  };
  const ci = (pair) => (pair ? `${fmtNumber(pair[0])} to ${fmtNumber(pair[1])}` : "");

  function fillTable(id, headers, rows) {
    const table = document.getElementById(id);
    table.querySelector("thead tr").replaceChildren(...headers.map((h) => el("th", {}, h)));
    table.querySelector("tbody").replaceChildren(
      ...rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", {}, cell)))),
    );
  }

  function render(c) {
    document.title = `${c.name} · adamp-tune`;
    text("comparison-name", c.name);
    const badge = document.getElementById("comparison-status");
    badge.textContent = c.status;
    badge.className = `status ${c.status}`;
    const facts = [
      ["owner", c.owner],
      ["workload", c.metric ? `${c.workload} (${c.metric}, ${c.direction})` : c.workload],
      ["optimizers", c.optimizers.join(", ")],
      ["phase", c.phase],
      ["budget", `${c.n_trials} tuning trials each, ${c.seeds} evaluation seeds`],
      ["sampler / pruner / seed", `${c.sampler} / ${c.pruner} / ${c.seed}`],
      ["elapsed", fmtDuration(c.elapsed_s)],
      ["fixed", JSON.stringify(c.fixed)],
    ];
    if (c.error) facts.push(["error", c.error]);
    document.getElementById("comparison-facts").replaceChildren(
      ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
    );
    fillTable(
      "studies",
      ["study", "optimizer", "role", "status", "complete", "pruned", "failed", "best"],
      c.studies.map((s) => [
        el("a", { href: `/studies/${s.study_id}` }, s.name),
        s.optimizer,
        s.role === "tune" ? "tuning" : "evaluation",
        s.status,
        s.counts.complete,
        s.counts.pruned,
        s.counts.fail,
        fmtNumber(s.best_value),
      ]),
    );
    const r = c.report;
    if (!r) return;
    text("verdict", r.verdict);
    fillTable(
      "optimizers",
      ["optimizer", "best tuned", "eval mean", "eval std", "eval 95% CI", "seeds", "projected", "weight norm"],
      r.optimizers.map((o) => {
        const ev = o.evaluation || {};
        const norms = o.weight_norms;
        return [
          o.optimizer,
          fmtNumber(o.best_tuned_value),
          fmtNumber(ev.mean),
          fmtNumber(ev.std),
          ci(ev.ci95),
          ev.n || 0,
          o.scale_invariant_fraction === null ? "" : `${Math.round(100 * o.scale_invariant_fraction)}%`,
          norms ? `${fmtNumber(norms[0])} → ${fmtNumber(norms[norms.length - 1])}` : "",
        ];
      }),
    );
    fillTable(
      "pairs",
      ["a − b", "difference", "95% CI", "test", "p", "trials to reach the other's best"],
      r.pairs.map((p) => [
        `${p.a} − ${p.b}`,
        fmtNumber(p.difference),
        ci(p.ci95),
        p.test,
        fmtNumber(p.p_value),
        Object.entries(p.trials_to_reach_other_best)
          .map(([k, v]) => `${k}: ${v === null ? "never" : v}`)
          .join(", "),
      ]),
    );
  }

  async function drawPlots(c) {
    const signature = JSON.stringify(c.studies.map((s) => [s.status, s.counts]));
    if (signature === plotsSignature) return;
    plotsSignature = signature;
    const answer = await getJSON(`/dashboard-api/comparisons/${comparisonId}/plots`);
    text("plots-note", answer.note || "");
    const holder = document.getElementById("plots");
    for (const plot of answer.plots) {
      let div = document.getElementById(`plot-${plot.key}`);
      if (!div) {
        div = el("div", { id: `plot-${plot.key}`, className: "plot" });
        holder.append(el("figure", {}, el("figcaption", {}, plot.title), div));
      }
      if (plot.figure === null) {
        div.textContent = plot.note || "";
        continue;
      }
      const layout = Object.assign({}, plot.figure.layout, { autosize: true, height: 380 });
      Plotly.react(div, plot.figure.data, layout, { responsive: true, displaylogo: false });
    }
  }

  let finished = false;
  poll(async () => {
    if (finished) return;
    const c = await getJSON(api);
    render(c);
    await drawPlots(c);
    finished = FINAL.includes(c.status);
  }, 3000);
})();
