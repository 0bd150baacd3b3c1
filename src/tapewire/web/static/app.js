// tapewire's web UI: a little script over server-rendered pages. It only ever inserts HTML
// that the server rendered (and escaped) from its own templates; recorded content never
// reaches the page any other way. No framework, no build step, no network beyond this server.
"use strict";

const POLL_MS = 2000;

async function fetchText(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.text();
}

function every(ms, fn) {
  // Polls while the tab is visible; one poll at a time.
  let busy = false;
  setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try { await fn(); } catch (e) { /* the server may be restarting: try again later */ }
    busy = false;
  }, ms);
}

function typing(event) {
  const t = event.target;
  return t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(t.tagName));
}

// ---- the sessions list --------------------------------------------------------------------

function sessionsPage() {
  const table = document.getElementById("sessions");
  const body = document.getElementById("session-rows");
  const find = document.getElementById("find");
  const button = document.getElementById("compare-button");
  let sort = { column: 3, dir: -1 };

  function value(row, column) {
    const cell = row.cells[column];
    return cell ? cell.dataset.v ?? cell.textContent : "";
  }

  function apply() {
    const th = table.tHead.rows[0].cells[sort.column];
    const numeric = th.dataset.sort === "num";
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = value(a, sort.column), y = value(b, sort.column);
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return order * sort.dir;
    });
    for (const row of rows) body.appendChild(row);
    const needle = find.value.trim().toLowerCase();
    for (const row of rows) row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
  }

  function choose() {
    const ticked = body.querySelectorAll("input[name=s]:checked");
    button.disabled = ticked.length !== 2;
  }

  Array.from(table.tHead.rows[0].cells).forEach((th, column) => {
    if (!th.dataset.sort) return;
    th.addEventListener("click", () => {
      sort = { column, dir: sort.column === column ? -sort.dir : (th.dataset.sort === "num" ? -1 : 1) };
      for (const other of table.tHead.rows[0].cells) other.classList.remove("sorted-asc", "sorted-desc");
      th.classList.add(sort.dir > 0 ? "sorted-asc" : "sorted-desc");
      apply();
    });
  });
  find.addEventListener("input", apply);
  body.addEventListener("change", choose);

  // Each row carries a signature of what it shows; the body is replaced when any differs.
  const signature = (rows) => Array.from(rows, (r) => r.dataset.sig).sort().join("\n");
  every(POLL_MS, async () => {
    const html = await fetchText(body.dataset.live);
    const fresh = document.createElement("tbody");
    fresh.innerHTML = html;
    if (signature(fresh.rows) === signature(body.rows)) return;
    const known = new Set(Array.from(body.rows, (r) => r.dataset.id));
    const ticked = new Set(Array.from(body.querySelectorAll("input[name=s]:checked"), (i) => i.value));
    body.innerHTML = html;
    for (const row of body.rows) {
      if (!known.has(row.dataset.id)) row.classList.add("fresh");
      const box = row.querySelector("input[name=s]");
      if (box && ticked.has(box.value)) box.checked = true;
    }
    document.querySelector(".empty")?.remove();
    apply();
    choose();
  });
  choose();
}

// ---- one session: step through, unfold, show all, live turns ----------------------------

function sessionPage() {
  const timeline = document.getElementById("timeline");
  let current = null;

  const turns = () => Array.from(timeline.querySelectorAll("article.turn"));

  function select(turn, scroll = true) {
    if (!turn) return;
    current?.classList.remove("current");
    current = turn;
    turn.classList.add("current");
    if (scroll) turn.scrollIntoView({ block: "nearest" });
    history.replaceState(null, "", `#${turn.id}`);
  }

  function step(by) {
    const all = turns();
    const at = current ? all.indexOf(current) : -1;
    select(all[Math.min(all.length - 1, Math.max(0, at + by))]);
  }

  function unfold(turn) {
    const folds = Array.from(turn.querySelectorAll("details"));
    const open = folds.some((d) => !d.open);
    for (const d of folds) d.open = open;
  }

  document.addEventListener("keydown", (event) => {
    if (typing(event) || event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.key === "j") { step(1); event.preventDefault(); }
    else if (event.key === "k") { step(-1); event.preventDefault(); }
    else if (event.key === "Enter" && current) { unfold(current); event.preventDefault(); }
  });

  timeline.addEventListener("click", async (event) => {
    const turn = event.target.closest?.("article.turn");
    if (turn && turn !== current) select(turn, false);
    const more = event.target.closest?.("a.more");
    if (!more || !turn) return;
    event.preventDefault();
    const fragment = new URL(more.href, location.href);
    fragment.searchParams.set("fragment", "1");
    const holder = document.createElement("div");
    holder.innerHTML = await fetchText(fragment);
    const full = holder.querySelector("article.turn");
    if (!full) return;
    full.className = turn.className;
    for (const d of full.querySelectorAll("details")) d.open = true;
    turn.replaceWith(full);
    current = full;
  });

  function fromHash() {
    const match = /^#t(\d+)$/.exec(location.hash);
    const turn = match && document.getElementById(`t${match[1]}`);
    if (turn) { select(turn); unfold(turn); }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();

  every(POLL_MS, async () => {
    const response = await fetch(`/api/sessions/${encodeURIComponent(timeline.dataset.session)}`, { credentials: "same-origin" });
    if (!response.ok) return;
    const summary = await response.json();
    if (String(summary.session.turns) === timeline.dataset.turns) return;
    const html = await fetchText(timeline.dataset.live);
    const open = new Set();
    timeline.querySelectorAll("article.turn").forEach((t) => {
      t.querySelectorAll("details").forEach((d, i) => { if (d.open) open.add(`${t.id}/${i}`); });
    });
    const known = new Set(turns().map((t) => t.id));
    const at = current?.id;
    timeline.innerHTML = html;
    timeline.dataset.turns = String(summary.session.turns);
    for (const t of turns()) {
      if (!known.has(t.id)) t.classList.add("fresh");
      t.querySelectorAll("details").forEach((d, i) => { if (open.has(`${t.id}/${i}`)) d.open = true; });
    }
    current = null;
    if (at) { const again = document.getElementById(at); if (again) { current = again; again.classList.add("current"); } }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("session-rows")) sessionsPage();
  if (document.getElementById("timeline")) sessionPage();
});
