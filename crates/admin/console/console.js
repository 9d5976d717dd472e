// The Edgecloud web console. Plain JavaScript, no build step: it logs in through
// /v1/session (an HttpOnly cookie the script never sees) and then uses the admin API.
// Every change echoes the session's CSRF token. Text from the server is put into the
// page with textContent only, never as HTML.
"use strict";

let session = null; // {user, admin, csrf, idle_seconds}
let pollTimer = null;

// ---------- small helpers ----------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function flash(message, isError) {
  const f = document.getElementById("flash");
  f.textContent = message || "";
  f.className = isError ? "error" : "";
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

// What the session may do in a bucket ("read" < "write" < "owner").
function may(bucket, level) {
  if (session.admin) return true;
  const order = ["read", "write", "owner"];
  return order.indexOf(session.grants[bucket]) >= order.indexOf(level);
}

function encodePath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

function objectUrl(bucket, key, version) {
  const q = version ? "?version=" + encodeURIComponent(version) : "";
  return "/v1/objects/" + encodeURIComponent(bucket) + "/" + encodePath(key) + q;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || "HTTP " + status);
    this.status = status;
    this.code = body && body.error;
  }
}

// One call to the admin API. Changes carry the CSRF token; a 401 shows the login.
async function api(method, path, body) {
  const headers = {};
  if (method !== "GET" && method !== "HEAD" && session && session.csrf) {
    headers["X-CSRF-Token"] = session.csrf;
  }
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  if (r.status === 401 && path !== "/v1/session") {
    showLogin("Your session has ended: log in again.");
    throw new ApiError(401, { message: "not logged in" });
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!r.ok) throw new ApiError(r.status, typeof data === "object" ? data : { message: text });
  return data;
}

// Runs an action from a button or form, reporting its outcome in the status line.
async function attempt(what, fn) {
  try {
    const done = await fn();
    if (done) flash(done, false);
    return true;
  } catch (e) {
    if (e.status !== 401) flash(what + " failed: " + e.message, true);
    return false;
  }
}

function table(headers, rows, caption) {
  return el("table", {},
    caption ? el("caption", { class: "muted", text: caption }) : null,
    el("thead", {}, el("tr", {}, headers.map(h => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows));
}

function field(label, input) {
  const id = input.id || ("f-" + Math.random().toString(36).slice(2));
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id, text: label }), input);
}

// ---------- login and navigation ----------

function showLogin(message) {
  session = null;
  stopPolling();
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("page").replaceChildren();
  document.getElementById("login").hidden = false;
  flash(message || "", Boolean(message));
  document.getElementById("token").focus();
}

function loggedIn(info) {
  session = info;
  document.getElementById("login").hidden = true;
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const a of nav.querySelectorAll("[data-admin]")) a.hidden = !info.admin;
  document.getElementById("who").textContent = "Logged in as " + info.user;
  document.getElementById("logout").hidden = false;
  flash("");
  route();
}

async function login(body) {
  try {
    loggedIn(await api("POST", "/v1/session", body));
  } catch (e) {
    flash("Login failed: " + e.message, true);
  }
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
}

// A page polls only while it is the latest navigation: a page dropped by
// route() must not start a timer that outlives it.
function startPolling(generation, fn, ms) {
  if (generation !== routeGeneration) return;
  stopPolling();
  pollTimer = setInterval(() => fn().catch(() => stopPolling()), ms);
}

// Routes: #/cluster, #/buckets, #/objects/BUCKET?prefix=P, #/policy/BUCKET, #/keys, #/repair,
// #/ledger?bucket=B&key=K.
function parseHash() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, query] = h.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query || "") };
}

// Each route() takes a number; a page that finishes loading after a later
// navigation began is dropped, so a slow page never replaces a newer one.
let routeGeneration = 0;

async function route() {
  if (!session) return;
  stopPolling();
  const generation = ++routeGeneration;
  const { parts, params } = parseHash();
  const name = parts[0] || (session.admin ? "cluster" : "buckets");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#/" + name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const pages = { cluster: clusterPage, buckets: bucketsPage, objects: objectsPage, policy: policyPage, jobs: jobsPage,
                  keys: keysPage, repair: repairPage, ledger: ledgerPage };
  const page = document.getElementById("page");
  const render = pages[name] || bucketsPage;
  try {
    const content = await render(parts.slice(1), params, generation);
    if (generation !== routeGeneration) return;
    page.replaceChildren(content);
    const h1 = page.querySelector("h1");
    if (h1) { h1.tabIndex = -1; h1.focus(); }
    document.title = (h1 ? h1.textContent + " · " : "") + "Edgecloud console";
  } catch (e) {
    if (generation === routeGeneration && e.status !== 401) {
      page.replaceChildren(el("h1", { text: "Something went wrong" }), el("p", { text: e.message }));
    }
  }
}

// ---------- cluster map ----------

function diskCells(disks) {
  return el("ul", {}, (disks || []).map(d => el("li", {},
    el("span", { class: d.ok === false ? "bad" : "ok", text: d.ok === false ? "failing " : "ok " }),
    d.path + " · " + (d.bytes_total ? bytes(d.bytes_total - d.bytes_free) + " of " + bytes(d.bytes_total) + " used · " : "")
      + (d.shards !== undefined ? d.shards + " shards" : ""))));
}

function nodeState(n) {
  if (n.state === "active" && n.suspected) return el("span", { class: "warn", text: "suspected" });
  const cls = n.state === "active" ? "ok" : n.state === "down" ? "bad" : "warn";
  return el("span", { class: cls, text: n.state });
}

async function clusterPage() {
  const [view, status] = await Promise.all([api("GET", "/v1/cluster"), api("GET", "/v1/status")]);
  const out = el("section", { "aria-labelledby": "cluster-title" },
    el("h1", { id: "cluster-title", text: "Cluster" }),
    el("p", {}, "Default policy ", el("strong", { text: view.policy }), ". The layout survives: ",
      el("strong", { id: "survives", text: view.survives }), "."),
    el("p", { class: "muted", text: "This node: Edgecloud " + status.version + ", " + status.buckets + " buckets." }));
  if (!view.status) {
    out.append(el("h2", { text: "One node" }),
      table(["Disk", "Shards", "Segments", "Used"], status.disks.map(d =>
        el("tr", {}, el("td", { text: d.path }), el("td", { class: "num", text: d.shards }),
          el("td", { class: "num", text: d.segments }), el("td", { class: "num", text: bytes(d.bytes) })))));
    return out;
  }
  const st = view.status;
  out.append(el("p", {}, "Layout epoch " + st.epoch + ", " + st.sites.length + " sites, "
    + st.nodes.filter(n => n.state !== "removed").length + " nodes."));
  for (const site of st.sites) {
    const nodes = st.nodes.filter(n => n.site === site && n.state !== "removed");
    out.append(el("section", { class: "site", "aria-label": "Site " + site },
      el("h2", { text: "Site " + site }),
      table(["Node", "Address", "State", "Raft", "Last seen", "Disks"], nodes.map(n =>
        el("tr", { "data-node": n.id },
          el("td", {}, n.id === st.me ? el("strong", { text: n.id + " (this node)" }) : n.id),
          el("td", { text: n.rpc_addr }),
          el("td", {}, nodeState(n), n.error ? el("div", { class: "muted", text: n.error }) : null),
          el("td", { text: n.role || "—" }),
          el("td", { text: n.seen_ms_ago === null || n.seen_ms_ago === undefined ? "—" : (n.seen_ms_ago / 1000).toFixed(1) + " s ago" }),
          el("td", {}, diskCells(n.disk_health && n.disk_health.length ? n.disk_health : n.disks))))))); 
  }
  return out;
}

// ---------- buckets ----------

async function bucketsPage() {
  const buckets = await api("GET", "/v1/buckets");
  const out = el("section", {}, el("h1", { text: "Buckets" }));
  if (session.admin) {
    const name = el("input", { id: "new-bucket", required: true, pattern: "[a-z0-9][a-z0-9.\\-]{1,61}[a-z0-9]",
                               title: "3 to 63 lower-case letters, digits, dots and hyphens" });
    const policy = el("input", { id: "new-policy", placeholder: "default" });
    const versioning = el("select", { id: "new-versioning" },
      el("option", { value: "enabled", text: "enabled" }), el("option", { value: "off", text: "off" }));
    out.append(el("form", { "aria-label": "Create a bucket", onsubmit: async ev => {
      ev.preventDefault();
      const q = new URLSearchParams({ versioning: versioning.value });
      if (policy.value.trim()) q.set("policy", policy.value.trim());
      if (await attempt("Creating the bucket", async () => {
        await api("PUT", "/v1/buckets/" + encodeURIComponent(name.value) + "?" + q);
        return "Bucket " + name.value + " created.";
      })) route();
    } }, field("New bucket", name), field("Redundancy policy (e.g. ec:4+2)", policy),
       field("Versioning", versioning), el("button", { type: "submit", text: "Create bucket" })));
  }
  if (!buckets.length) {
    out.append(el("p", { text: session.admin ? "No buckets yet." : "This key has no grant on any bucket." }));
    return out;
  }
  out.append(table(["Bucket", "Versioning", "Policy", "Object lock", "Lifecycle", "Created", "Actions"], buckets.map(b => {
    const owner = may(b.name, "owner");
    const sel = el("select", { "aria-label": "Versioning of " + b.name, disabled: !owner },
      ["enabled", "suspended"].concat(b.versioning === "off" ? ["off"] : []).map(v =>
        el("option", { value: v, selected: v === b.versioning, text: v })));
    sel.addEventListener("change", () => attempt("Changing versioning", async () => {
      await api("PUT", "/v1/buckets/" + encodeURIComponent(b.name) + "/versioning?state=" + sel.value);
      return "Versioning of " + b.name + " is now " + sel.value + ".";
    }));
    return el("tr", {},
      el("th", { scope: "row" }, el("a", { href: "#/objects/" + encodeURIComponent(b.name), text: b.name })),
      el("td", {}, sel), el("td", { text: b.policy }),
      el("td", { text: b.object_lock || "off" }),
      el("td", { text: b.lifecycle_rules ? b.lifecycle_rules + (b.lifecycle_rules === 1 ? " rule" : " rules") : "none" }),
      el("td", { text: b.created }),
      el("td", {}, owner && el("a", { href: "#/policy/" + encodeURIComponent(b.name),
                                     "aria-label": "Access policy of " + b.name, text: "Access policy" }),
        " ", owner && el("button", { type: "button", class: "danger", "aria-label": "Delete bucket " + b.name,
        text: "Delete", onclick: async () => {
          if (!confirm("Delete the empty bucket " + b.name + "?")) return;
          if (await attempt("Deleting the bucket", async () => {
            await api("DELETE", "/v1/buckets/" + encodeURIComponent(b.name));
            return "Bucket " + b.name + " deleted.";
          })) route();
        } })));
  })));
  return out;
}

// ---------- a bucket's access policy ----------

async function policyPage(parts) {
  const bucket = parts[0];
  const path = "/v1/buckets/" + encodeURIComponent(bucket) + "/policy";
  const current = await api("GET", path);
  const text = el("textarea", { id: "policy-text", rows: 16, cols: 80, spellcheck: "false" });
  text.value = current.policy ? JSON.stringify(JSON.parse(current.policy), null, 2) : "";
  const example = {
    Version: "2012-10-17",
    Statement: [{ Sid: "PublicRead", Effect: "Allow", Principal: "*", Action: ["s3:GetObject"],
                  Resource: ["arn:aws:s3:::" + bucket + "/*"] }],
  };
  return el("section", {},
    el("h1", { text: "Access policy of " + bucket }),
    el("p", { class: "muted", text: "An S3 bucket policy: Allow or Deny statements per action, resource and principal (an access key, or * for everyone). A Deny wins. Anonymous requests only ever get reads. Access keys' grants apply as well." }),
    el("p", {}, el("span", { id: "policy-state", text: current.policy ? "This bucket has a policy." : "This bucket has no policy." })),
    el("form", { "aria-label": "Edit the access policy", onsubmit: async ev => {
      ev.preventDefault();
      if (await attempt("Saving the policy", async () => {
        await api("PUT", path, { policy: text.value.trim() || null });
        return text.value.trim() ? "Policy of " + bucket + " saved." : "Policy of " + bucket + " removed.";
      })) route();
    } }, field("Policy (JSON; empty: none)", text),
       el("button", { type: "submit", text: "Save policy" }),
       el("button", { type: "button", class: "secondary", text: "Fill in: everyone may read objects",
                      onclick: () => { text.value = JSON.stringify(example, null, 2); text.focus(); } }),
       el("button", { type: "button", class: "danger", text: "Remove policy", onclick: async () => {
         if (await attempt("Removing the policy", async () => {
           await api("PUT", path, { policy: null });
           return "Policy of " + bucket + " removed.";
         })) route();
       } })),
    el("p", {}, el("a", { href: "#/buckets", text: "Back to the buckets" })));
}

// ---------- object browser ----------

function objectsHash(bucket, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return "#/objects/" + encodeURIComponent(bucket) + (s ? "?" + s : "");
}

async function objectsPage(parts, params) {
  const bucket = parts[0];
  const prefix = params.get("prefix") || "";
  const asOf = params.get("as_of") || "";
  const showVersions = params.get("versions") === "1";
  const buckets = await api("GET", "/v1/buckets");
  const info = buckets.find(b => b.name === bucket);
  if (!info) throw new ApiError(404, { message: "no bucket " + bucket });

  const out = el("section", {}, el("h1", { text: "Bucket " + bucket }));
  // Breadcrumbs: the bucket, then each folder of the prefix.
  const crumbs = [el("a", { href: objectsHash(bucket, { as_of: asOf }), text: bucket })];
  let acc = "";
  for (const seg of prefix.split("/").filter(Boolean)) {
    acc += seg + "/";
    crumbs.push(" / ", el("a", { href: objectsHash(bucket, { prefix: acc, as_of: asOf }), text: seg }));
  }
  out.append(el("nav", { "aria-label": "Folders" }, crumbs));

  // Time slider: from the bucket's creation to now; the right end is "now".
  const created = Date.parse(info.created);
  const now = Date.now();
  const STEPS = 1000;
  const at = asOf ? Date.parse(asOf) : now;
  const pos = Math.round(((at - created) / Math.max(1, now - created)) * STEPS);
  const slider = el("input", { type: "range", id: "as-of", min: 0, max: STEPS, step: 1,
                               value: Math.max(0, Math.min(STEPS, pos)) });
  const sliderLabel = el("output", { for: "as-of", id: "as-of-text" });
  const whenOf = v => (Number(v) >= STEPS ? null : new Date(created + (now - created) * Number(v) / STEPS));
  const describe = v => { const t = whenOf(v); return t ? "as of " + t.toISOString() : "now (latest versions)"; };
  sliderLabel.textContent = describe(slider.value);
  slider.setAttribute("aria-valuetext", describe(slider.value));
  slider.addEventListener("input", () => {
    sliderLabel.textContent = describe(slider.value);
    slider.setAttribute("aria-valuetext", describe(slider.value));
  });
  slider.addEventListener("change", () => {
    const t = whenOf(slider.value);
    location.hash = objectsHash(bucket, { prefix, as_of: t ? t.toISOString() : "" });
  });
  out.append(el("div", { class: "slider" },
    el("label", { for: "as-of", text: "Browse the bucket as it was" }), slider, sliderLabel,
    asOf ? el("a", { href: objectsHash(bucket, { prefix }), text: "Back to now" }) : null));

  const writable = may(bucket, "write");
  if (!asOf && writable) out.append(uploadForm(bucket, prefix));

  const toggle = el("a", { href: objectsHash(bucket, { prefix, as_of: asOf, versions: showVersions ? "" : "1" }),
                           text: showVersions ? "Hide old versions" : "Show versions and delete markers" });
  if (!asOf) out.append(el("p", {}, toggle));

  const q = new URLSearchParams({ prefix, delimiter: "/" });
  if (asOf) q.set("as_of", asOf);
  let rows = [];
  let prefixes;
  if (showVersions && !asOf) {
    const page = await api("GET", "/v1/versions/" + encodeURIComponent(bucket) + "?" + q);
    prefixes = page.prefixes;
    rows = page.versions.map(v => objectRow(bucket, prefix, v, true, writable));
    if (page.truncated) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "More versions follow; narrow the folder to see them." })));
  } else {
    const page = await api("GET", "/v1/list/" + encodeURIComponent(bucket) + "?" + q);
    prefixes = page.prefixes;
    rows = page.objects.map(o => objectRow(bucket, prefix, o, false, writable && !asOf));
    if (page.truncated) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "More objects follow; narrow the folder to see them." })));
  }
  const folderRows = prefixes.map(p => el("tr", {},
    el("th", { scope: "row" }, el("a", { href: objectsHash(bucket, { prefix: p, as_of: asOf, versions: showVersions ? "1" : "" }),
                                          text: p.slice(prefix.length) })),
    el("td", { text: "folder" }), el("td"), el("td"), el("td"), el("td")));
  if (!folderRows.length && !rows.length) {
    out.append(el("p", { id: "empty", text: asOf ? "Nothing was here at that time." : "This folder is empty." }));
  } else {
    out.append(table(["Name", "Size", "Modified", "Version", "Type", "Actions"], folderRows.concat(rows)));
  }
  return out;
}

function objectRow(bucket, prefix, o, versions, writable) {
  const name = o.key.slice(prefix.length);
  const actions = el("td", {});
  if (!o.delete_marker) {
    actions.append(el("a", { href: objectUrl(bucket, o.key, versions ? o.version_id : null),
                             download: name.split("/").pop() || "object",
                             "aria-label": "Download " + name + (versions ? " version " + o.version_id : ""),
                             text: "Download" }), " ");
    actions.append(el("a", { href: "#/ledger?" + new URLSearchParams({ bucket, key: o.key, version: o.version_id }),
                             "aria-label": "Verify " + name + " in the ledger", text: "Verify" }), " ");
  }
  // Deleting a version for good takes owner; a delete (marker) takes write.
  if (versions ? may(bucket, "owner") : writable) {
    actions.append(el("button", { type: "button", class: "danger",
      "aria-label": (versions ? "Delete version " + o.version_id + " of " : "Delete ") + name,
      text: versions ? "Delete version" : "Delete", onclick: async () => {
        const question = versions
          ? "Delete version " + o.version_id + " of " + o.key + " for good?"
          : "Delete " + o.key + "? (With versioning, older versions stay and can be browsed.)";
        if (!confirm(question)) return;
        if (await attempt("Deleting", async () => {
          const r = await api("DELETE", objectUrl(bucket, o.key, versions ? o.version_id : null));
          return r && r.delete_marker ? o.key + " now has a delete marker." : "Deleted.";
        })) route();
      } }));
  }
  return el("tr", { class: o.delete_marker ? "marker" : "" },
    el("th", { scope: "row", text: name + (versions && o.is_latest ? " (latest)" : "") }),
    el("td", { class: "num", text: o.delete_marker ? "" : bytes(o.size) }),
    el("td", { text: o.modified }),
    el("td", { text: o.delete_marker ? "delete marker" : o.version_id }),
    el("td", { text: o.delete_marker ? "" : (o.content_type || "") }),
    actions);
}

// Uploads with XMLHttpRequest: fetch cannot report upload progress.
function uploadForm(bucket, prefix) {
  const files = el("input", { type: "file", id: "upload-files", multiple: true, required: true });
  const bar = el("progress", { id: "upload-progress", max: 100, value: 0, hidden: true,
                               "aria-label": "Upload progress" });
  const text = el("span", { id: "upload-text", "aria-live": "polite" });
  const put = (file, done) => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", objectUrl(bucket, prefix + file.name));
    xhr.setRequestHeader("X-CSRF-Token", session.csrf);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.upload.onprogress = ev => {
      if (!ev.lengthComputable) return;
      bar.value = Math.floor(((done + ev.loaded) / bar.total) * 100);
      text.textContent = "Uploading " + file.name + ": " + bytes(done + ev.loaded) + " of " + bytes(bar.total);
    };
    xhr.onload = () => {
      if (xhr.status === 401) { showLogin("Your session has ended: log in again."); }
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else {
        let msg = "HTTP " + xhr.status;
        try { msg = JSON.parse(xhr.responseText).message; } catch { /* not JSON */ }
        reject(new Error(msg));
      }
    };
    xhr.onerror = () => reject(new Error("the connection failed"));
    xhr.send(file);
  });
  return el("form", { "aria-label": "Upload files", onsubmit: async ev => {
    ev.preventDefault();
    const list = Array.from(files.files);
    bar.total = list.reduce((s, f) => s + f.size, 0) || 1;
    bar.hidden = false;
    bar.value = 0;
    let done = 0;
    const ok = await attempt("Uploading", async () => {
      for (const f of list) { await put(f, done); done += f.size; }
      bar.value = 100;
      text.textContent = "Uploaded " + list.length + " file(s), " + bytes(done) + ".";
      return "Uploaded " + list.map(f => f.name).join(", ") + ".";
    });
    if (ok) route();
  } }, field("Upload files to " + (prefix || "the bucket's top"), files),
     el("button", { type: "submit", text: "Upload" }), bar, text);
}

// ---------- compute jobs ----------

const EXAMPLE_JOB = `-- Count the words of every line (docs/jobs.md).
function map(line, object)
  for word in line:gmatch("%a+") do emit(word:lower(), 1) end
end
function reduce(word, counts)
  local n = 0
  for _, c in ipairs(counts) do n = n + c end
  return n
end
`;

async function jobsPage(_parts, _params, generation) {
  const [jobs, buckets] = await Promise.all([api("GET", "/v1/jobs"), api("GET", "/v1/buckets")]);
  const out = el("section", {}, el("h1", { text: "Jobs" }),
    el("p", { class: "muted", text: "Run Lua or JavaScript map/reduce code over a bucket's objects on the nodes that hold them; the result is a JSON-lines object and a ledger record." }));
  const bucket = el("select", { id: "job-bucket" }, buckets.map(b => el("option", { value: b.name, text: b.name })));
  const prefix = el("input", { id: "job-prefix" });
  const output = el("input", { id: "job-output", placeholder: "jobs/ID/result.jsonl" });
  const code = el("textarea", { id: "job-code", rows: 12, cols: 80, spellcheck: "false" });
  code.value = EXAMPLE_JOB;
  const runtime = el("select", { id: "job-runtime" },
    el("option", { value: "lua", text: "Lua" }), el("option", { value: "javascript", text: "JavaScript" }),
    el("option", { value: "python", text: "Python" }),
    el("option", { value: "wasm", text: "WebAssembly (WAT text or base64 module)" }));
  out.append(el("form", { "aria-label": "Run a job", onsubmit: async ev => {
    ev.preventDefault();
    if (await attempt("Starting the job", async () => {
      const j = await api("POST", "/v1/jobs", { bucket: bucket.value, prefix: prefix.value, code: code.value,
                                               runtime: runtime.value, output: output.value.trim() || null });
      return "Job " + j.id + " started.";
    })) route();
  } }, field("Bucket", bucket), field("Prefix", prefix), field("Output key", output),
     field("Runtime", runtime), field("Code", code), el("button", { type: "submit", text: "Run job" })));
  const body = el("div", { id: "job-list" });
  const render = list => body.replaceChildren(list.length ? table(
    ["Job", "State", "Input", "Tasks", "Records", "Seconds", "Output or error", "Actions"], list.map(j => el("tr", { "data-job": j.id },
      el("th", { scope: "row", text: j.id }),
      el("td", {}, el("span", { class: j.state === "succeeded" ? "ok" : j.state === "running" ? "warn" : "bad", text: j.state })),
      el("td", { text: j.bucket + "/" + j.prefix }),
      el("td", {}, j.state === "running" ? el("progress", { max: j.tasks_total || 1, value: j.tasks_done,
                                                            "aria-label": "Tasks of job " + j.id }) : null,
        " " + j.tasks_done + "/" + j.tasks_total),
      el("td", { class: "num", text: j.records }),
      el("td", { class: "num", text: j.seconds.toFixed(1) }),
      el("td", {}, j.output ? el("a", { href: objectUrl(j.output.bucket, j.output.key, j.output.version_id),
                                        download: j.output.key.split("/").pop(), text: j.output.key + " (" + bytes(j.output.size) + ")" })
                            : (j.error || "")),
      el("td", {}, j.state === "running" ? el("button", { type: "button", class: "danger", "aria-label": "Cancel job " + j.id,
        text: "Cancel", onclick: () => attempt("Cancelling", async () => { await api("DELETE", "/v1/jobs/" + j.id); return "Asked job " + j.id + " to stop."; }) }) : null))))
    : el("p", { text: "No jobs yet." }));
  render(jobs);
  out.append(el("h2", { text: "Recent jobs" }), body);
  startPolling(generation, () => api("GET", "/v1/jobs").then(render), 1000);
  return out;
}

// ---------- access keys ----------

async function keysPage() {
  const [keys, buckets] = await Promise.all([api("GET", "/v1/keys"), api("GET", "/v1/buckets")]);
  const out = el("section", {}, el("h1", { text: "Access keys" }));
  const name = el("input", { id: "key-name", required: true });
  const admin = el("input", { type: "checkbox", id: "key-admin" });
  const create = el("input", { type: "checkbox", id: "key-create-buckets" });
  const secretBox = el("div", { id: "new-secret", "aria-live": "polite" });
  const keySel = el("select", { id: "grant-key" }, keys.map(k => el("option", { value: k.access_key, text: k.access_key + " (" + k.name + ")" })));
  out.append(el("form", { "aria-label": "Create an access key", onsubmit: async ev => {
    ev.preventDefault();
    await attempt("Creating the key", async () => {
      const k = await api("POST", "/v1/keys", { name: name.value, admin: admin.checked, create_buckets: create.checked });
      const list = await keysTable(await api("GET", "/v1/keys"), buckets);
      out.querySelector("table")?.replaceWith(list);
      if (!out.querySelector("table")) out.append(list);
      keySel.append(el("option", { value: k.access_key, text: k.access_key + " (" + k.name + ")" }));
      keySel.value = k.access_key;
      secretBox.replaceChildren(el("p", {}, "Key ", el("strong", { id: "new-key-id", text: k.access_key }),
        " created. Its secret is shown only now; store it safely:"),
        el("p", { class: "secret", id: "secret-value", text: k.secret }));
      return "Key " + k.access_key + " created.";
    });
  } }, field("Name", name), field("Admin", admin), field("May create buckets", create),
     el("button", { type: "submit", text: "Create key" })), secretBox);

  const bucketSel = el("select", { id: "grant-bucket" }, buckets.map(b => el("option", { value: b.name, text: b.name })));
  const perm = el("select", { id: "grant-permission" }, ["read", "write", "owner", "none"].map(p => el("option", { value: p, text: p })));
  out.append(el("h2", { text: "Grant access to a bucket" }), el("form", { "aria-label": "Grant access", onsubmit: async ev => {
    ev.preventDefault();
    if (await attempt("Granting", async () => {
      await api("PUT", "/v1/keys/" + encodeURIComponent(keySel.value) + "/buckets/" + encodeURIComponent(bucketSel.value),
                { permission: perm.value });
      return keySel.value + " now has " + perm.value + " on " + bucketSel.value + ".";
    })) out.querySelector("table").replaceWith(keysTable(await api("GET", "/v1/keys"), buckets));
  } }, field("Key", keySel), field("Bucket", bucketSel), field("Permission", perm),
     el("button", { type: "submit", text: "Grant" })));
  out.append(el("h2", { text: "Keys" }), keysTable(keys, buckets));
  return out;
}

function keysTable(keys) {
  return table(["Access key", "Name", "Created", "Rights", "Actions"], keys.map(k => el("tr", {},
    el("th", { scope: "row", text: k.access_key }), el("td", { text: k.name }), el("td", { text: k.created }),
    el("td", { text: k.admin ? "admin (everything)" : [k.create_buckets ? "may create buckets" : null]
      .concat(Object.entries(k.buckets).map(([b, p]) => b + ": " + p)).filter(Boolean).join(", ") || "none" }),
    el("td", {}, el("button", { type: "button", class: "danger", "aria-label": "Delete key " + k.access_key,
      text: "Delete", onclick: async () => {
        if (!confirm("Delete the key " + k.access_key + "? Clients using it stop working.")) return;
        if (await attempt("Deleting the key", async () => {
          await api("DELETE", "/v1/keys/" + encodeURIComponent(k.access_key));
          return "Key " + k.access_key + " deleted.";
        })) route();
      } })))));
}

// ---------- repair and scrub ----------

function passReport(title, st, id) {
  const r = st.report || {};
  const state = st.running ? el("span", { class: "warn", text: "running" })
    : st.passes ? el("span", { class: st.healthy ? "ok" : "bad", text: st.healthy ? "healthy" : "found damage" })
    : el("span", { class: "muted", text: "not run since the node started" });
  return el("section", { id, "aria-label": title },
    el("h2", { text: title }),
    el("p", {}, "State: ", state, st.passes ? " · " + st.passes + " passes, the last took " + st.last_seconds.toFixed(1) + " s" : ""),
    st.running ? el("progress", { "aria-label": title + " in progress" }) : null,
    table(["Chunks checked", "Shards checked", "Missing", "Corrupt", "Repaired", "Unrecoverable", "Read"], [el("tr", {},
      el("td", { class: "num", text: r.chunks_checked || 0 }), el("td", { class: "num", text: r.shards_checked || 0 }),
      el("td", { class: "num", text: r.shards_missing || 0 }), el("td", { class: "num", text: r.shards_corrupt || 0 }),
      el("td", { class: "num", text: r.shards_repaired || 0 }),
      el("td", { class: "num", text: (r.chunks_unrecoverable || []).length }),
      el("td", { class: "num", text: bytes(r.bytes_read || 0) }))]));
}

async function repairPage(_parts, _params, generation) {
  const out = el("section", {}, el("h1", { text: "Repair and scrub" }),
    el("p", { class: "muted", text: "Repair rebuilds shards that are missing or away from where the layout places them; it runs by itself after failures. A scrub reads and checks every shard (bitrot) and repairs what it finds." }));
  const gc = el("input", { type: "checkbox", id: "scrub-gc" });
  const body = el("div", { id: "passes" });
  const refresh = async () => {
    const [view, scrub] = await Promise.all([api("GET", "/v1/cluster"), api("GET", "/v1/scrub")]);
    body.replaceChildren(passReport("Repair", view.repair, "repair-state"), passReport("Scrub", scrub, "scrub-state"));
    return view;
  };
  const view = await refresh();
  out.append(el("form", { "aria-label": "Start a scrub", onsubmit: ev => {
    ev.preventDefault();
    flash("Scrub started.");
    api("POST", "/v1/scrub" + (gc.checked ? "?gc=true" : "")).then(r => {
      flash("Scrub done in " + r.seconds.toFixed(1) + " s: " + r.chunks_checked + " chunks checked, "
        + r.shards_corrupt + " corrupt and " + r.shards_missing + " missing shards found, " + r.shards_repaired + " repaired.");
      refresh();
    }, e => flash("Scrub failed: " + e.message, true));
    setTimeout(refresh, 300);
  } }, field("Also collect garbage", gc), el("button", { type: "submit", text: "Scrub now" })));
  if (view.status) {
    out.append(el("form", { "aria-label": "Start a repair pass", onsubmit: async ev => {
      ev.preventDefault();
      await attempt("Asking for repair", async () => { await api("POST", "/v1/cluster/repair"); return "Repair pass requested."; });
      refresh();
    } }, el("button", { type: "submit", text: "Repair now" })));
  }
  out.append(body);
  startPolling(generation, refresh, 2000);
  return out;
}

// ---------- ledger ----------

const enc = new TextEncoder();

function b64(s) {
  const bin = atob(s.trim());
  return Uint8Array.from(bin, c => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
}

async function sha256(data) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// RFC 9162 §2.1.3.2: the root an inclusion proof leads to from a leaf hash.
async function rootFromInclusion(index, size, leaf, proof) {
  if (index >= size) throw new Error("the index is not below the tree size");
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) throw new Error("the proof is too long");
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(concat([1], p, r));
      if (fn % 2 === 0) { while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); } }
    } else {
      r = await sha256(concat([1], r, p));
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("the proof is too short");
  return r;
}

// A C2SP signed note checked with a verifier key "name+keyhash+base64(0x01||key)";
// returns the checkpoint it signs: {origin, size, root}.
async function verifyCheckpoint(note, verifierKey) {
  // name+hash+key, where the base64 key may itself contain "+".
  const m = verifierKey.trim().match(/^([^+\s]+)\+([0-9a-f]{8})\+(\S+)$/);
  if (!m) throw new Error("the public key is not of the form name+hash+key");
  const [, name, hashHex, keyB64] = m;
  const keyBytes = b64(keyB64 || "");
  if (!name || keyBytes.length !== 33 || keyBytes[0] !== 1) throw new Error("the public key is not an Ed25519 note key");
  const raw = keyBytes.slice(1);
  const keyHash = (await sha256(concat(enc.encode(name + "\n"), [1], raw))).slice(0, 4);
  if (Array.from(keyHash, b => b.toString(16).padStart(2, "0")).join("") !== hashHex) {
    throw new Error("the public key's hash does not match its name and key");
  }
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new Error("the checkpoint is not a signed note");
  const text = note.slice(0, split + 1);
  const sigLines = note.slice(split + 2).split("\n").filter(Boolean);
  const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
  let signed = false;
  for (const line of sigLines) {
    const m = line.match(/^\u2014 (\S+) (\S+)$/);
    if (!m || m[1] !== name) continue;
    const sig = b64(m[2]);
    if (sig.length !== 68 || !equal(sig.slice(0, 4), keyHash)) continue;
    if (await crypto.subtle.verify({ name: "Ed25519" }, key, sig.slice(4), enc.encode(text))) signed = true;
  }
  if (!signed) throw new Error("no valid signature by " + name);
  const [origin, size, root] = text.split("\n");
  return { origin, size: Number(size), root: b64(root) };
}

async function verifyObject(bucket, key, version, publicKey, report) {
  const check = (ok, text) => report.append(el("li", { "data-mark": ok ? "\u2713" : "\u2717", class: ok ? "ok" : "bad", text }));
  if (!crypto.subtle) {
    check(false, "This page is not a secure context (use HTTPS or localhost): the browser offers no cryptography here.");
    return false;
  }
  const q = version ? "?version=" + encodeURIComponent(version) : "";
  const bundle = await api("GET", "/v1/ledger/prove/" + encodeURIComponent(bucket) + "/" + encodePath(key) + q);
  let cp;
  try {
    cp = await verifyCheckpoint(bundle.checkpoint, publicKey);
    check(true, "The checkpoint is signed by the log's key (" + cp.origin + ", " + cp.size + " entries).");
  } catch (e) {
    check(false, "Checkpoint: " + e.message);
    return false;
  }
  const record = JSON.parse(bundle.entry);
  const leaf = await sha256(concat([0], enc.encode(bundle.entry)));
  try {
    const root = await rootFromInclusion(bundle.index, cp.size, leaf, bundle.proof.map(b64));
    const ok = equal(root, cp.root);
    check(ok, ok ? "Entry " + bundle.index + " is in the signed tree (inclusion proof of " + bundle.proof.length + " hashes)."
                 : "The inclusion proof leads to another root: the entry is not in this log.");
    if (!ok) return false;
  } catch (e) {
    check(false, "Inclusion proof: " + e.message);
    return false;
  }
  const same = record.bucket === bucket && record.key === key && (!version || record.version_id === version);
  check(same, same ? "The entry records " + record.kind + " of " + bucket + "/" + key + ", version " + record.version_id + ", by " + record.actor + "."
                   : "The entry is about " + record.bucket + "/" + record.key + ", not this object.");
  if (!same) return false;
  if (record.sha256 && record.size <= 64 * 1024 * 1024) {
    const r = await fetch(objectUrl(bucket, key, record.version_id), { credentials: "same-origin" });
    const body = new Uint8Array(await r.arrayBuffer());
    const hex = Array.from(await sha256(body), b => b.toString(16).padStart(2, "0")).join("");
    const ok = r.ok && hex === record.sha256 && body.length === record.size;
    check(ok, ok ? "The object's " + bytes(record.size) + " read now hash to the recorded SHA-256."
                 : "The object read now does not match the recorded SHA-256: it changed or is damaged.");
    return ok;
  }
  check(true, "The object's content was not hashed here (multipart or over 64 MiB): use `edgecloud ledger check`.");
  return true;
}

async function ledgerPage(_parts, params) {
  const out = el("section", {}, el("h1", { text: "Ledger" }),
    el("p", { class: "muted", text: "Every change and every job is an entry of a Merkle-tree log, signed at each checkpoint. Here the browser checks an object's proof itself: the signature, the inclusion proof and the content." }));
  let checkpoint = "", publicKey = "";
  try {
    [checkpoint, publicKey] = await Promise.all([api("GET", "/v1/ledger/checkpoint"), api("GET", "/v1/ledger/public-key")]);
  } catch (e) {
    if (e.status === 401) throw e;
    out.append(el("p", { class: "bad", text: "This node keeps no ledger: " + e.message }));
    return out;
  }
  out.append(el("h2", { text: "Latest checkpoint" }), el("pre", { id: "checkpoint", tabindex: 0, "aria-label": "The signed checkpoint", text: checkpoint }));
  const keyInput = el("input", { id: "ledger-key", value: String(publicKey).trim(), size: 60 });
  const bucket = el("input", { id: "proof-bucket", required: true, value: params.get("bucket") || "" });
  const key = el("input", { id: "proof-key", required: true, value: params.get("key") || "" });
  const version = el("input", { id: "proof-version", value: params.get("version") || "" });
  const report = el("ul", { class: "checks", id: "proof-report", "aria-live": "polite" });
  const verdict = el("p", { id: "proof-verdict", role: "status" });
  const run = async () => {
    report.replaceChildren();
    verdict.textContent = "Checking…";
    try {
      const ok = await verifyObject(bucket.value, key.value, version.value, keyInput.value, report);
      verdict.textContent = ok ? "Verified: this version is in the signed log and matches it." : "Not verified.";
      verdict.className = ok ? "ok" : "bad";
    } catch (e) {
      if (e.status === 401) return;
      verdict.textContent = "Not verified: " + e.message;
      verdict.className = "bad";
    }
  };
  out.append(el("h2", { text: "Verify an object" }),
    el("form", { "aria-label": "Verify an object's proof", onsubmit: ev => { ev.preventDefault(); run(); } },
      field("Bucket", bucket), field("Key", key), field("Version (empty: latest)", version),
      field("Log public key (compare it with your saved copy of ledger.pub)", keyInput),
      el("button", { type: "submit", text: "Verify in this browser" })),
    verdict, report);
  if (bucket.value && key.value) setTimeout(run, 0);
  return out;
}

// ---------- start ----------

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("login-token").addEventListener("submit", ev => {
    ev.preventDefault();
    login({ token: document.getElementById("token").value });
  });
  document.getElementById("login-key").addEventListener("submit", ev => {
    ev.preventDefault();
    login({ access_key: document.getElementById("access-key").value, secret: document.getElementById("secret").value });
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await api("DELETE", "/v1/session").catch(() => {});
    showLogin("Logged out.");
  });
  // Moving to another page clears the last message; actions that re-render keep theirs.
  window.addEventListener("hashchange", () => { flash(""); route(); });
  try {
    loggedIn(await api("GET", "/v1/session"));
  } catch {
    showLogin();
  }
});
