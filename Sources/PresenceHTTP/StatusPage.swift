/// The status page: one HTML page with its script and style, no external assets,
/// refreshing itself from `/status.json` every two seconds.
enum StatusPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Vertex presence server</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="/status.css">
    <script src="/status.js" defer></script>
    </head>
    <body>
    <header><h1>Vertex presence server</h1><span id="domains"></span><span id="updated" class="muted"></span></header>
    <main>
      <section class="figures">
        <div><span class="label">listeners</span><span id="listeners" class="figure">…</span></div>
        <div><span class="label">sessions</span><span id="sessions" class="figure">…</span></div>
        <div><span class="label">authenticated</span><span id="authenticated" class="figure">…</span></div>
        <div><span class="label">relayed channels</span><span id="relay-channels" class="figure">…</span></div>
        <div><span class="label">relay throughput</span><span id="relay-rate" class="figure">…</span></div>
        <div><span class="label">relayed since start</span><span id="relayed" class="figure">…</span></div>
      </section>
      <section>
        <h2>Nodes</h2>
        <table id="nodes"><thead><tr><th>node</th><th>addresses</th><th>health</th><th>listeners</th></tr></thead><tbody></tbody></table>
        <p id="peers" class="muted"></p>
      </section>
      <section>
        <h2>Recent problems</h2>
        <ul id="problems"></ul>
      </section>
      <p class="muted">Prometheus metrics: <a href="/metrics">/metrics</a></p>
    </main>
    </body>
    </html>
    """#

    static let style = #"""
    body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: #1d2327; background: #f6f8fa; }
    header { display: flex; gap: 1rem; align-items: baseline; padding: .8rem 1.5rem; background: #fff; border-bottom: 1px solid #dde3e8; }
    header h1 { margin: 0; font-size: 1.25rem; }
    #domains { flex: 1; font-weight: 600; }
    main { padding: 1rem 1.5rem; display: grid; gap: 1rem; }
    section { background: #fff; border: 1px solid #dde3e8; border-radius: 8px; padding: .8rem 1rem; }
    h2 { margin: 0 0 .5rem; font-size: 1.05rem; }
    .figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: .8rem; }
    .figures div { display: flex; flex-direction: column; }
    .label { color: #68737d; font-size: .85rem; }
    .figure { font-size: 1.6rem; font-weight: 600; }
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: .35rem .3rem; border-bottom: 1px solid #dde3e8; }
    .ok { color: #16794c; font-weight: 600; }
    .muted { color: #68737d; }
    #problems li { font-size: .9rem; }
    """#

    static let script = #"""
    "use strict";
    let previous = null;

    function size(n) {
      const units = ["B", "kB", "MB", "GB", "TB"];
      let i = 0;
      while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
      return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
    }

    function cell(text, className) {
      const td = document.createElement("td");
      td.textContent = text;
      if (className) td.className = className;
      return td;
    }

    function show(status) {
      const now = Date.now();
      document.getElementById("domains").textContent = status.domains.join(", ");
      document.getElementById("listeners").textContent = status.listeners;
      document.getElementById("sessions").textContent = status.sessions;
      document.getElementById("authenticated").textContent = status.authenticatedSessions;
      document.getElementById("relay-channels").textContent = status.relayChannels;
      document.getElementById("relayed").textContent = size(status.relayedBytes);
      if (previous) {
        const seconds = (now - previous.at) / 1000;
        const rate = Math.max(0, status.relayedBytes - previous.bytes) / seconds;
        document.getElementById("relay-rate").textContent = size(rate) + "/s";
      }
      previous = { at: now, bytes: status.relayedBytes };
      const row = document.createElement("tr");
      row.className = "node";
      row.append(cell(status.node + " (this node)"), cell(status.addresses.join(", ")), cell("up", "ok"), cell(String(status.listeners)));
      const peers = status.peers.map((peer) => {
        const tr = document.createElement("tr");
        tr.className = "peer";
        tr.dataset.name = peer.name;
        tr.append(cell(peer.name), cell(peer.address), cell("up, seen " + peer.lastSeen.toFixed(1) + " s ago", "ok"), cell("—"));
        return tr;
      });
      document.querySelector("#nodes tbody").replaceChildren(row, ...peers);
      document.getElementById("peers").textContent = status.peers.length === 0
        ? "No other node is up for these domains." : status.peers.length + (status.peers.length === 1 ? " other node is up." : " other nodes are up.");
      const problems = status.problems.map((problem) => {
        const li = document.createElement("li");
        li.textContent = new Date(problem.time).toLocaleString() + " — " + problem.text;
        return li;
      });
      if (problems.length === 0) {
        const li = document.createElement("li");
        li.className = "muted";
        li.textContent = "none";
        problems.push(li);
      }
      document.getElementById("problems").replaceChildren(...problems);
      document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    }

    async function refresh() {
      try {
        const response = await fetch("/status.json", { cache: "no-store" });
        if (response.ok) show(await response.json());
        else document.getElementById("updated").textContent = "the server answered " + response.status;
      } catch (error) {
        document.getElementById("updated").textContent = "cannot reach the server";
      }
    }

    document.addEventListener("DOMContentLoaded", () => { refresh(); setInterval(refresh, 2000); });
    """#
}
