extension PageAssets {
    /// Renders every snapshot the server streams, and turns the forms into API calls.
    /// Text from peers (addresses, file names) only ever goes into textContent.
    static let script = #"""
    "use strict";
    const $ = (id) => document.getElementById(id);
    let state = null;
    let stateAt = 0;
    let chosen = [];

    function el(tag, props, ...children) {
      const node = document.createElement(tag);
      for (const [key, value] of Object.entries(props || {})) {
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key.startsWith("data-")) node.setAttribute(key, value);
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node[key] = value;
      }
      for (const child of children) if (child != null) node.append(child);
      return node;
    }

    function size(n) {
      const units = ["B", "kB", "MB", "GB", "TB"];
      let i = 0;
      while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
      return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
    }

    function when(iso) { return new Date(iso).toLocaleString(); }

    function notice(text, error) {
      const box = $("notice");
      box.textContent = text;
      box.className = error ? "error" : "";
      box.hidden = false;
      clearTimeout(notice.timer);
      notice.timer = setTimeout(() => { box.hidden = true; }, error ? 12000 : 5000);
    }

    async function api(method, path, body) {
      const options = { method, credentials: "same-origin", headers: {} };
      if (body instanceof Blob) options.body = body;
      else if (body !== undefined) { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
      const response = await fetch(path, options);
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(answer.error || ("HTTP " + response.status));
      return answer;
    }

    function listen() {
      const events = new EventSource("/api/events");
      events.addEventListener("state", (event) => {
        state = JSON.parse(event.data);
        stateAt = Date.now();
        $("live").textContent = "live";
        $("live").className = "pill on";
        render();
      });
      events.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "pill off"; };
    }

    // Each part is drawn again only when its own data changed: a progress tick does not
    // rebuild the prompts under the user's pointer.
    const drawn = {};
    function part(name, data, draw) {
      const key = JSON.stringify(data);
      if (drawn[name] === key) return;
      drawn[name] = key;
      draw();
    }

    function render() {
      part("prompts", state.prompts.map((prompt) => prompt.id), renderPrompts);
      part("send", [state.identities.map((identity) => identity.address), state.contacts], renderSendForm);
      part("transfers", state.transfers, renderTransfers);
      part("contacts", [state.contacts, state.identities.length], renderContacts);
      part("inbox", [state.inbox, state.downloads], renderInbox);
      part("identities", [state.identities, state.pins], renderIdentities);
      part("status", [state.services, state.connections, state.errors], renderStatus);
    }

    function renderPrompts() {
      const box = $("prompts");
      box.replaceChildren();
      $("prompts-section").hidden = state.prompts.length === 0;
      for (const prompt of state.prompts) {
        const answer = (choice) => async () => {
          try {
            await api("POST", "/api/prompts/" + encodeURIComponent(prompt.id), { answer: choice });
          } catch (error) { notice(error.message, true); }
        };
        const files = el("ul", {}, ...prompt.files.slice(0, 50).map((file) => el("li", {}, el("span", { text: file.name }), el("span", { class: "muted", text: size(file.size) }))));
        box.append(el("div", { class: "prompt", "data-id": prompt.id, "data-from": prompt.from },
          el("strong", { text: prompt.from }),
          el("span", { text: " wants to send " + prompt.to + " " + prompt.files.length + (prompt.files.length === 1 ? " file" : " files") + " (" + size(prompt.totalBytes) + ")" }),
          files,
          el("div", { class: "row" },
            el("button", { type: "button", "data-answer": "once", text: "Accept once", onclick: answer("once") }),
            el("button", { type: "button", class: "plain", "data-answer": "always", text: "Always accept from " + prompt.from, onclick: answer("always") }),
            el("button", { type: "button", class: "danger", "data-answer": "refuse", text: "Refuse", onclick: answer("refuse") }),
            el("span", { class: "muted countdown", "data-left": prompt.secondsLeft, text: "" }))));
      }
      tick();
    }

    function tick() {
      const passed = Math.floor((Date.now() - stateAt) / 1000);
      for (const node of document.querySelectorAll(".countdown")) {
        const left = Math.max(0, Number(node.dataset.left) - passed);
        node.textContent = "refused in " + left + " s unless you answer";
      }
    }

    function keep(select, options) {
      const previous = select.value;
      select.replaceChildren(...options.map(([value, label]) => el("option", { value, text: label })));
      if (options.some(([value]) => value === previous)) select.value = previous;
    }

    function renderSendForm() {
      keep($("send-from"), state.identities.map((identity) => [identity.address, identity.address]));
      keep($("send-to"), state.contacts.map((contact) => [contact.address, contact.name + " <" + contact.address + ">"]));
    }

    function renderTransfers() {
      const body = $("transfers").tBodies[0];
      body.replaceChildren();
      $("transfers-empty").hidden = state.transfers.length > 0;
      for (const transfer of state.transfers) {
        const percent = transfer.totalBytes > 0 ? Math.floor(transfer.bytes * 100 / transfer.totalBytes) : (transfer.state === "done" ? 100 : 0);
        const outcome = transfer.state === "done" ? (transfer.verified ? el("span", { class: "verified", text: "verified" }) : el("span", { class: "failed", text: "not verified" }))
          : transfer.error ? el("span", { class: "failed", text: transfer.state + ": " + transfer.error })
          : el("span", { class: "muted", text: transfer.state });
        const files = transfer.files.length === 0 ? "…" : transfer.files.length === 1 ? transfer.files[0] : transfer.files[0] + " and " + (transfer.files.length - 1) + " more";
        body.append(el("tr", { class: "transfer", "data-id": transfer.id, "data-direction": transfer.direction, "data-state": transfer.state, "data-peer": transfer.peer },
          el("td", { text: (transfer.direction === "send" ? "→ " : "← ") + transfer.peer }),
          el("td", { text: files, title: transfer.files.join("\n") }),
          el("td", { class: "progress" }, el("progress", { max: 100, value: percent }), " ", el("span", { class: "percent", text: percent + " %" })),
          el("td", { class: "small", text: transfer.bytesPerSecond > 0 ? size(transfer.bytesPerSecond) + "/s" : "" }),
          el("td", { class: "small method", text: transfer.method || "" }),
          el("td", { class: "outcome" }, outcome)));
      }
    }

    function renderContacts() {
      const list = $("contacts");
      list.replaceChildren();
      $("contacts-empty").hidden = state.contacts.length > 0;
      for (const contact of state.contacts) {
        const unknown = state.identities.length === 0 ? "sign in to see" : "checking…";
        const reach = contact.reachable === null || contact.reachable === undefined ? ["", unknown] : contact.reachable ? ["on", "reachable"] : ["off", "not reachable"];
        list.append(el("li", { class: "contact", "data-address": contact.address, "data-reachable": String(contact.reachable) },
          el("span", { class: "dot " + reach[0], title: reach[1] }),
          el("strong", { text: contact.name }),
          el("span", { class: "muted grow", text: contact.address + (contact.trusted ? " · trusted" : "") }),
          el("span", { class: "small reach", text: reach[1] }),
          el("button", { type: "button", class: "plain", text: "Send", onclick: () => { $("send-to").value = contact.address; $("send-section").scrollIntoView(); } }),
          el("button", { type: "button", class: "plain", text: "Rename", onclick: () => { $("contact-address").value = contact.address; $("contact-name").value = contact.name; $("contact-name").focus(); } }),
          el("button", { type: "button", class: "danger", text: "Remove", onclick: async () => {
            try { await api("DELETE", "/api/contacts/" + encodeURIComponent(contact.address)); } catch (error) { notice(error.message, true); }
          } })));
      }
    }

    function renderInbox() {
      const body = $("inbox").tBodies[0];
      body.replaceChildren();
      $("inbox-empty").hidden = state.inbox.length > 0;
      $("downloads").textContent = state.downloads;
      for (const file of state.inbox) {
        const name = file.path.split("/").pop();
        body.append(el("tr", { class: "received", "data-sender": file.sender },
          el("td", { class: "small", text: when(file.received) }),
          el("td", { text: file.sender + " → " + file.receiver }),
          el("td", { text: name, title: file.path }),
          el("td", { class: "small", text: size(file.size) }),
          el("td", {}, file.verified ? el("span", { class: "verified", text: "verified" }) : el("span", { class: "failed", text: "not verified" }))));
      }
    }

    function renderIdentities() {
      const list = $("identities");
      list.replaceChildren();
      $("me").textContent = state.identities.map((identity) => identity.address).join(", ");
      if (state.identities.length === 0) list.append(el("li", { class: "muted", text: "Sign in to get a certificate for your address." }));
      for (const identity of state.identities) {
        const registered = identity.registered === null || identity.registered === undefined ? "checking…" : identity.registered ? "online" : "offline";
        list.append(el("li", { class: "identity", "data-address": identity.address },
          el("strong", { text: identity.address }),
          el("span", { class: "pill " + (identity.registered ? "on" : identity.registered === false ? "off" : ""), text: registered }),
          el("span", { class: "small muted", text: "certificate " + identity.serial.slice(0, 12) + "…, valid until " + when(identity.expires) }),
          identity.problem ? el("span", { class: "failed small", text: identity.problem }) : null));
      }
      $("pins").replaceChildren(...state.pins.map((pin) => el("li", {}, el("strong", { text: pin.domain }), el("code", { class: "small", text: pin.fingerprint }))));
    }

    function renderStatus() {
      $("services").replaceChildren(...(state.services.length ? state.services.map((service) => el("li", { text: "listening: " + service }))
        : [el("li", { class: "muted", text: "not listening (sign in first)" })]));
      $("connections").tBodies[0].replaceChildren(...state.connections.map((connection) => el("tr", {},
        el("td", { class: "small", text: when(connection.time) }),
        el("td", { text: (connection.direction === "in" ? "← " : "→ ") + connection.peer }),
        el("td", { class: "small", text: "by " + connection.method }))));
      $("errors").replaceChildren(...state.errors.map((error) => el("li", { text: error })));
    }

    function showChosen() {
      $("send-chosen").replaceChildren(...chosen.map((file) => el("li", {}, el("span", { text: file.name }), el("span", { class: "muted", text: size(file.size) }))));
    }

    async function send(event) {
      event.preventDefault();
      const from = $("send-from").value, to = $("send-to").value, path = $("send-path").value.trim();
      if (!from) return notice("Sign in first.", true);
      if (!to) return notice("Add the contact you send to first.", true);
      if (chosen.length === 0 && !path) return notice("Drop or pick files, or type a path.", true);
      $("send-submit").disabled = true;
      try {
        const uploads = [];
        for (const file of chosen) {
          notice("Preparing " + file.name + "…");
          uploads.push((await api("POST", "/api/uploads?name=" + encodeURIComponent(file.name), file)).id);
        }
        await api("POST", "/api/send", { from, to, uploads, paths: path ? [path] : [] });
        notice("Sending to " + to + ".");
        chosen = [];
        $("send-files").value = "";
        $("send-path").value = "";
        showChosen();
      } catch (error) {
        notice(error.message, true);
      } finally {
        $("send-submit").disabled = false;
      }
    }

    function setUp() {
      $("send-form").addEventListener("submit", send);
      $("send-files").addEventListener("change", () => { chosen = Array.from($("send-files").files); showChosen(); });
      const drop = $("drop");
      drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
      drop.addEventListener("dragleave", () => drop.classList.remove("over"));
      drop.addEventListener("drop", (event) => {
        event.preventDefault();
        drop.classList.remove("over");
        chosen = chosen.concat(Array.from(event.dataTransfer.files));
        showChosen();
      });
      $("contact-form").addEventListener("submit", async (event) => {
        event.preventDefault();
        try {
          await api("POST", "/api/contacts", { address: $("contact-address").value, name: $("contact-name").value, server: $("contact-server").value });
          notice("Saved " + $("contact-address").value + ".");
          $("contact-form").reset();
        } catch (error) { notice(error.message, true); }
      });
      $("signin-form").addEventListener("submit", async (event) => {
        event.preventDefault();
        $("signin-submit").disabled = true;
        try {
          const answer = await api("POST", "/api/identities", { address: $("signin-address").value, password: $("signin-password").value,
            server: $("signin-server").value, createAccount: $("signin-create").checked });
          notice("Signed in as " + answer.address + ".");
          $("signin-form").reset();
        } catch (error) {
          notice(error.message, true);
        } finally {
          $("signin-submit").disabled = false;
        }
      });
      setInterval(tick, 1000);
      listen();
    }

    document.addEventListener("DOMContentLoaded", setUp);
    """#
}
