// The Herald console's script: fills the server-rendered pages from /api/v1 and keeps them
// live by polling. Broker data is only ever set as text (textContent), never as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const MAIN = document.getElementById("main");
const PAGE = MAIN.dataset.page;
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2457c5", "#c5522a", "#1e7d3a", "#8a3ab9", "#b58900", "#0f7c8c", "#d33682", "#555"];

async function api(path, options) {
  const init = Object.assign({ headers: {} }, options || {});
  if (init.method && init.method !== "GET") {
    init.headers["x-csrf-token"] = CSRF;
    if (init.body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(init.body);
    }
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const kafka = body && body.kafka_error ? " (" + body.kafka_error + ")" : "";
    throw new Error((body && body.error ? body.error : response.statusText) + kafka);
  }
  return body;
}

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function fill(tableId, rows) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows);
}

function num(value) { return el("td", { class: "num" }, value == null ? "–" : Number(value).toLocaleString("en")); }

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? Math.round(n * 10) / 10 : n.toFixed(1)) + " " + units[i];
}

function duration(ms) {
  if (ms == null || ms < 0) return "forever";
  const s = ms / 1000;
  if (s < 120) return s.toFixed(0) + " s";
  if (s < 7200) return (s / 60).toFixed(0) + " min";
  if (s < 172800) return (s / 3600).toFixed(0) + " h";
  return (s / 86400).toFixed(0) + " d";
}

function say(id, text, ok) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.className = "message " + (ok ? "ok" : "bad");
}

function status(ok, text) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = ok ? "status" : "status bad";
}

// A line chart of series [{name, points: [[t_ms, value], ...]}] drawn as SVG.
function chart(id, series, format) {
  const box = document.getElementById(id);
  const all = series.flatMap((s) => s.points);
  if (all.length < 2) {
    box.replaceChildren(el("div", { class: "empty" }, "Collecting samples (one every 5 s)…"));
    return;
  }
  // Drawn at the box's own width, so text keeps its shape from a phone to a desktop.
  const W = Math.max(280, box.clientWidth - 16), H = 180, L = 70, B = 20, T = 8, R = 10;
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const line = (x1, y1, x2, y2, stroke) => {
    const l = document.createElementNS(SVG, "line");
    for (const [k, v] of Object.entries({ x1, y1, x2, y2, stroke, "stroke-width": 1 })) l.setAttribute(k, v);
    svg.append(l);
  };
  const label = (tx, ty, text, anchor) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("font-size", "11");
    t.setAttribute("fill", "#5b6578"); t.setAttribute("text-anchor", anchor || "end");
    t.textContent = text;
    svg.append(t);
  };
  line(L, y(0), W - R, y(0), "#d9dee7");
  line(L, y(vmax), W - R, y(vmax), "#eef0f4");
  label(L - 4, y(vmax) + 4, format(vmax));
  label(L - 4, y(0), format(0));
  label(L, H - 4, new Date(t0).toLocaleTimeString(), "start");
  label(W - R, H - 4, new Date(t1).toLocaleTimeString(), "end");
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const path = document.createElementNS(SVG, "polyline");
    path.setAttribute("points", s.points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", COLORS[i % COLORS.length]);
    path.setAttribute("stroke-width", "2");
    path.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(path);
  });
  const legend = el("div", { class: "legend" }, ...series.map((s, i) => {
    const key = el("i");
    key.style.background = COLORS[i % COLORS.length];
    return el("span", {}, key, s.name);
  }));
  box.replaceChildren(svg, legend);
}

// Runs `refresh` now and every POLL_MS, showing failures in the header.
function live(refresh) {
  const run = async () => {
    try {
      await refresh();
      status(true, "live · " + new Date().toLocaleTimeString());
    } catch (error) {
      status(false, "not updated: " + error.message);
    }
  };
  run();
  setInterval(run, POLL_MS);
}

function groupRows(groups, withPartitions) {
  return groups.map((g) => el("tr", { "data-group": g.group },
    el("td", {}, el("a", { href: "/groups/" + encodeURIComponent(g.group) }, g.group)),
    el("td", {}, g.state), num(g.members),
    ...(withPartitions ? [num(g.partitions)] : []),
    el("td", { class: "num lag" }, Number(g.lag).toLocaleString("en"))));
}

const pages = {};

pages.overview = () => live(async () => {
  const [broker, history, groups] = await Promise.all([
    api("/api/v1/broker"), api("/api/v1/history"), api("/api/v1/groups")]);
  const card = (label, value) => el("div", { class: "card" }, el("span", {}, label), el("b", {}, value));
  document.getElementById("cards").replaceChildren(
    card("Health", broker.status), card("Uptime", duration(broker.uptime_ms)),
    card("Topics", broker.topics), card("Partitions", broker.partitions),
    card("Groups", broker.groups), card("Connections", broker.connections_open),
    card("Storage", bytes(broker.disk_bytes)),
    card("In", bytes(broker.throughput.bytes_in_per_s) + "/s"),
    card("Out", bytes(broker.throughput.bytes_out_per_s) + "/s"));
  const s = history.samples;
  chart("chart-throughput", [
    { name: "in (bytes/s)", points: s.map((p) => [p.t_ms, p.bytes_in_per_s]) },
    { name: "out (bytes/s)", points: s.map((p) => [p.t_ms, p.bytes_out_per_s]) }], (v) => bytes(v) + "/s");
  chart("chart-storage", [{ name: "on disk", points: s.map((p) => [p.t_ms, p.disk_bytes]) }], bytes);
  fill("groups", groupRows(groups.groups, false));
});

pages.topics = () => {
  document.getElementById("create-topic").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      const topic = await api("/api/v1/topics", { method: "POST", body: {
        name: form.name.value, partitions: Number(form.partitions.value) || undefined } });
      say("create-message", "created " + topic.name, true);
      form.reset();
    } catch (error) {
      say("create-message", error.message, false);
    }
  });
  live(async () => {
    const { topics } = await api("/api/v1/topics");
    fill("topics", topics.map((t) => el("tr", { "data-topic": t.name },
      el("td", {}, el("a", { href: "/topics/" + encodeURIComponent(t.name) }, t.name)),
      num(t.partitions), num(t.messages), el("td", { class: "num" }, bytes(t.size_bytes)),
      el("td", { class: "num" }, duration(t.retention_ms)),
      el("td", { class: "num" }, t.records_in_per_s.toFixed(1)),
      el("td", { class: "num" }, t.records_out_per_s.toFixed(1)))));
  });
};

// A key, value or header value as the API shows it.
function shown(field) {
  if (field == null) return el("span", { class: "enc" }, "null");
  const note = field.encoding + (field.truncated ? ", cut at " + field.text.length : "") + " · " + field.bytes + " B";
  return el("div", {}, el("pre", {}, field.text), el("span", { class: "enc" }, note));
}

pages.topic = () => {
  const topic = MAIN.dataset.topic;
  const base = "/api/v1/topics/" + encodeURIComponent(topic);
  let partitionCount = -1;
  let next = null;

  const setPartitions = (count) => {
    if (count === partitionCount) return;
    partitionCount = count;
    for (const select of document.querySelectorAll('select[name="partition"]')) {
      const keep = select.value;
      select.replaceChildren(...Array.from({ length: count }, (_, i) => el("option", { value: i }, i)));
      if (keep && Number(keep) < count) select.value = keep;
    }
  };

  let configsShown = false;
  const refresh = async () => {
    const detail = await api(base);
    setPartitions(detail.partitions.length);
    fill("partitions", detail.partitions.map((p) => el("tr", {},
      el("td", {}, p.partition), num(p.log_start), num(p.high_watermark), num(p.messages),
      el("td", { class: "num" }, bytes(p.size_bytes)))));
    // Configs are filled once, so a value being edited is not replaced under the cursor.
    if (!configsShown) {
      configsShown = true;
      fill("configs", detail.configs.map((c) => {
        const input = el("input", { value: c.value == null ? "" : c.value, "aria-label": c.name, "data-config": c.name });
        const save = el("button", { type: "button" }, "Save");
        save.addEventListener("click", async () => {
          try {
            await api(base + "/configs", { method: "PATCH", body: { set: { [c.name]: input.value } } });
            say("config-message", "saved " + c.name + " = " + input.value, true);
          } catch (error) {
            say("config-message", error.message, false);
          }
        });
        return el("tr", {}, el("td", {}, c.name + (c.overridden ? " *" : "")), el("td", {}, input), el("td", {}, save));
      }));
    }
  };

  const browse = async (more) => {
    const form = document.getElementById("browse");
    const params = new URLSearchParams({ format: form.format.value, limit: 50 });
    if (form.key.value) params.set("key", form.key.value);
    if (more && next != null) params.set("offset", next);
    else if (form.from.value === "offset") params.set("offset", form.at.value.trim());
    else if (form.from.value === "time") {
      const at = Date.parse(form.at.value.trim());
      if (Number.isNaN(at)) throw new Error("the time is not a date, e.g. 2026-01-01T00:00:00Z");
      params.set("timestamp_ms", at);
    } else if (form.from.value === "newest") params.set("newest", "true");
    const answer = await api(base + "/partitions/" + form.partition.value + "/messages?" + params);
    const rows = answer.messages.map((m) => el("tr", { "data-offset": m.offset },
      el("td", { class: "num" }, m.offset), el("td", {}, new Date(m.timestamp_ms).toISOString()),
      el("td", { class: "key" }, shown(m.key)), el("td", { class: "value" }, shown(m.value)),
      el("td", {}, ...m.headers.map((h) => el("div", {}, h.name + " = ", shown(h.value))))));
    const body = document.querySelector("#messages tbody");
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    next = answer.next_offset;
    const newest = form.from.value === "newest" && !more;
    document.getElementById("more").hidden = newest || next >= answer.high_watermark;
    say("browse-message", answer.messages.length + " shown; " + answer.scanned + " scanned; end " + answer.high_watermark, true);
  };
  const browseSafely = (more) => browse(more).catch((error) => say("browse-message", error.message, false));

  document.getElementById("browse").addEventListener("submit", (event) => { event.preventDefault(); browseSafely(false); });
  document.getElementById("more").addEventListener("click", () => browseSafely(true));

  document.getElementById("produce").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const headers = {};
    for (const line of form.headers.value.split("\n")) {
      const at = line.indexOf("=");
      if (at > 0) headers[line.slice(0, at).trim()] = line.slice(at + 1);
    }
    try {
      const body = { value: form.value.value, headers };
      if (form.key.value) body.key = form.key.value;
      const answer = await api(base + "/partitions/" + form.partition.value + "/messages", { method: "POST", body });
      say("produce-message", "produced at offset " + answer.offset, true);
    } catch (error) {
      say("produce-message", error.message, false);
    }
  });

  document.getElementById("add-partitions").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api(base + "/partitions", { method: "POST", body: { count: Number(event.target.count.value) } });
      await refresh();
    } catch (error) {
      say("config-message", error.message, false);
    }
  });

  document.getElementById("delete-topic").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api(base + "?confirm=" + encodeURIComponent(event.target.confirm.value), { method: "DELETE" });
      window.location.assign("/topics");
    } catch (error) {
      say("delete-message", error.message, false);
    }
  });

  live(refresh);
};

pages.groups = () => live(async () => {
  const { groups } = await api("/api/v1/groups");
  fill("groups", groupRows(groups, true));
});

pages.group = () => {
  const group = MAIN.dataset.group;
  const base = "/api/v1/groups/" + encodeURIComponent(group);
  let planned = null;

  live(async () => {
    const detail = await api(base);
    document.getElementById("group-state").textContent = detail.state;
    document.getElementById("group-lag").textContent = Number(detail.lag).toLocaleString("en");
    fill("offsets", detail.partitions.map((p) => el("tr", {},
      el("td", {}, p.topic), num(p.partition), num(p.committed), num(p.end),
      el("td", { class: "num lag" }, Number(p.lag).toLocaleString("en")))));
    fill("members", detail.members.map((m) => el("tr", {},
      el("td", {}, m.member_id), el("td", {}, m.client_id), el("td", {}, m.client_host),
      el("td", {}, m.assignment.map((a) => a.topic + ": " + a.partitions.join(", ")).join("; ")))));
    chart("chart-lag", detail.lag_history.map((s) => ({ name: s.topic + "/" + s.partition, points: s.points })),
      (v) => Number(v).toLocaleString("en"));
  });

  const request = (dryRun) => {
    const form = document.getElementById("reset");
    const body = { to: form.to.value, dry_run: dryRun };
    if (form.topic.value.trim()) body.topic = form.topic.value.trim();
    if (form.value.value.trim()) body.value = Number(form.value.value.trim());
    return body;
  };
  document.getElementById("reset").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const body = request(true);
      const plan = await api(base + "/reset-offsets", { method: "POST", body });
      fill("reset-preview", plan.partitions.map((p) => el("tr", {},
        el("td", {}, p.topic), num(p.partition), num(p.current), num(p.target), num(p.lag_after))));
      planned = body;
      document.getElementById("apply-reset").disabled = plan.partitions.length === 0;
      say("reset-message", "preview: nothing changed yet", true);
    } catch (error) {
      say("reset-message", error.message, false);
    }
  });
  document.getElementById("apply-reset").addEventListener("click", async () => {
    if (!planned) return;
    try {
      await api(base + "/reset-offsets", { method: "POST", body: Object.assign({}, planned, { dry_run: false }) });
      say("reset-message", "offsets reset", true);
      document.getElementById("apply-reset").disabled = true;
    } catch (error) {
      say("reset-message", error.message, false);
    }
  });
  document.getElementById("delete-group").addEventListener("click", async () => {
    try {
      await api(base, { method: "DELETE" });
      window.location.assign("/groups");
    } catch (error) {
      say("delete-message", error.message, false);
    }
  });
};

// A member's load out of its capacity, "3 / 64", with a bar when both are known.
function load(value, capacity) {
  const known = (n) => n == null ? "–" : Number(n).toLocaleString("en");
  const cell = el("td", { class: "num load" }, known(value) + " / " + known(capacity));
  if (value != null && capacity != null && capacity > 0) {
    cell.append(el("meter", { min: "0", max: String(capacity), value: String(Math.min(value, capacity)) }));
  }
  return cell;
}

pages.peers = () => live(async () => {
  const { browsing, reason, peers } = await api("/api/v1/peers");
  const off = document.getElementById("peers-off");
  off.hidden = browsing;
  off.textContent = browsing ? "" : "Not browsing: " + reason;
  document.getElementById("peers-empty").hidden = !browsing || peers.length > 0;
  const now = Date.now();
  fill("peers", peers.map((p) => el("tr", { "data-instance": p.instance },
    el("td", {}, p.topic), el("td", {}, p.group),
    el("td", {}, ...p.addresses.flatMap((a, i) => i ? [el("br"), a] : [a])),
    load(p.load, p.capacity), el("td", { class: "num" }, p.protocol_version),
    el("td", { title: new Date(p.last_seen_ms).toISOString() },
      duration(Math.max(0, now - p.last_seen_ms)) + " ago"))));
});

pages.bench = () => {
  const frame = document.getElementById("bench-report");
  let shown = null;
  const refresh = async () => {
    const status = await api("/api/v1/bench");
    document.getElementById("bench-empty").hidden = status.uploaded_ms != null;
    document.getElementById("bench-upload").hidden = !status.uploads_accepted;
    if (status.uploaded_ms != null && status.uploaded_ms !== shown) {
      shown = status.uploaded_ms;
      frame.src = "/bench/report?at=" + shown;
      frame.hidden = false;
    }
  };
  document.getElementById("bench-upload").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = event.target.file.files[0];
    if (!file) return say("bench-message", "choose the JSON file first", false);
    try {
      const response = await fetch("/api/v1/bench", {
        method: "POST", headers: { "x-csrf-token": CSRF, "content-type": "application/json" },
        body: await file.text() });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error);
      say("bench-message", "uploaded", true);
      await refresh();
    } catch (error) {
      say("bench-message", error.message, false);
    }
  });
  live(refresh);
};

pages[PAGE]();
