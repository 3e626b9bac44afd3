// The studies list: polls /api/v1/studies and /api/v1/cluster every 2 s.
"use strict";

(() => {
  const { el, fmtNumber, age, getJSON } = AT;
  const statusSelect = document.getElementById("filter-status");
  const ownerInput = document.getElementById("filter-owner");
  const tbody = document.querySelector("#studies tbody");

  // Filters live in the URL so a filtered view can be shared.
  const query = new URLSearchParams(window.location.search);
  statusSelect.value = query.get("status") || "";
  ownerInput.value = query.get("owner") || "";

  function progress(study) {
    const c = study.counts;
    const done = c.complete + c.pruned + c.fail;
    const bar = el("progress", { max: study.n_trials, value: Math.min(done, study.n_trials) });
    const text = el(
      "span",
      { className: "progress-text" },
      `${c.complete} complete · ${c.running} running · ${c.pruned} pruned · ${c.fail} failed / ${study.n_trials}`,
    );
    return el("td", { className: "progress-cell" }, bar, " ", text);
  }

  function row(study) {
    const link = el("a", { href: `/studies/${study.id}` }, study.name);
    const best = study.best_trial ? fmtNumber(study.best_trial.value) : "";
    return el(
      "tr",
      { dataset: { studyId: String(study.id), status: study.status } },
      el("td", {}, study.id),
      el("td", { className: "name" }, link),
      el("td", {}, study.owner),
      el("td", {}, study.workload),
      el("td", {}, study.optimizer),
      el("td", {}, el("span", { className: `status ${study.status}` }, study.status)),
      progress(study),
      el("td", { className: "num", title: study.metric || "" }, best),
      el("td", { title: study.created_at }, age(study.created_at)),
    );
  }

  let latest = 0; // answers to superseded requests (filters changed meanwhile) are dropped

  async function refreshStudies() {
    const seq = ++latest;
    const status = statusSelect.value;
    const owner = ownerInput.value.trim();
    const page = await getJSON("/api/v1/studies", { status, owner, limit: 200 });
    if (seq !== latest) return;
    tbody.replaceChildren(...page.items.map(row));
    document.getElementById("studies-empty").hidden = page.items.length > 0;
    document.getElementById("studies-total").textContent =
      page.total > page.items.length
        ? `showing ${page.items.length} of ${page.total}`
        : `${page.total} studies`;
    document.getElementById("updated").textContent =
      `updated ${new Date().toLocaleTimeString()}`;
  }

  async function refreshCluster() {
    const cluster = await getJSON("/api/v1/cluster");
    const owners = Object.entries(cluster.queue_by_owner)
      .map(([o, n]) => `${o}: ${n}`)
      .join(", ");
    document.getElementById("cluster-summary").textContent =
      `${cluster.nodes.filter((n) => n.alive).length} nodes · ` +
      `GPUs in use ${fmtNumber(cluster.gpus_in_use)} / ${fmtNumber(cluster.gpus_total)} · ` +
      `CPUs in use ${fmtNumber(cluster.cpus_in_use)} / ${fmtNumber(cluster.cpus_total)} · ` +
      `${cluster.running_trials} trials running · queue ${cluster.queue_depth}` +
      (owners ? ` (${owners})` : "");
    document.querySelector("#cluster-nodes tbody").replaceChildren(
      ...cluster.nodes.map((n) =>
        el(
          "tr",
          { className: n.alive ? "" : "dead" },
          el("td", { title: n.node_id }, n.node_id.slice(0, 12)),
          el("td", {}, n.address),
          el("td", {}, n.is_head ? "head" : ""),
          el("td", {}, n.alive ? "yes" : "no"),
          el("td", { className: "num" }, fmtNumber(n.cpus_total)),
          el("td", { className: "num" }, fmtNumber(n.gpus_total)),
        ),
      ),
    );
  }

  const studies = AT.poll(refreshStudies, 2000);
  const cluster = AT.poll(refreshCluster, 5000);

  function filtersChanged() {
    const q = new URLSearchParams();
    if (statusSelect.value) q.set("status", statusSelect.value);
    if (ownerInput.value.trim()) q.set("owner", ownerInput.value.trim());
    const search = q.toString();
    window.history.replaceState(null, "", search ? `?${search}` : window.location.pathname);
    studies.now();
  }
  statusSelect.addEventListener("change", filtersChanged);
  let typing = null;
  ownerInput.addEventListener("input", () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(filtersChanged, 300);
  });
  document.getElementById("filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    filtersChanged();
  });
})();
