extension PageAssets {
    /// The page's skeleton; app.js fills it from the state the server streams.
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Vertex</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="/app.css">
    <script src="/app.js" defer></script>
    </head>
    <body>
    <header>
      <h1>Vertex</h1>
      <span id="me"></span>
      <span id="live" class="pill">connecting…</span>
    </header>
    <div id="notice" role="status" hidden></div>
    <main>
      <section id="prompts-section" hidden>
        <h2>Incoming</h2>
        <div id="prompts"></div>
      </section>

      <section id="send-section">
        <h2>Send</h2>
        <form id="send-form">
          <div class="row">
            <label>From <select id="send-from"></select></label>
            <label>To <select id="send-to"></select></label>
          </div>
          <div id="drop" class="drop">
            <p>Drop files here, or pick them:</p>
            <input id="send-files" type="file" multiple>
            <ul id="send-chosen"></ul>
          </div>
          <label class="wide">or a path on this computer
            <input id="send-path" autocomplete="off" placeholder="~/Documents/report.pdf"></label>
          <button id="send-submit" type="submit">Send</button>
        </form>
      </section>

      <section>
        <h2>Contacts</h2>
        <p id="contacts-empty" class="empty">No contacts yet: add the people you send to.</p>
        <ul id="contacts"></ul>
        <form id="contact-form" class="row">
          <input id="contact-address" required autocomplete="off" placeholder="bob@example.org">
          <input id="contact-name" autocomplete="off" placeholder="Name">
          <input id="contact-server" autocomplete="off" placeholder="their server, host:port (optional)">
          <button id="contact-submit" type="submit">Add or rename</button>
        </form>
      </section>

      <section id="transfers-section">
        <h2>Transfers</h2>
        <p id="transfers-empty" class="empty">No transfers yet.</p>
        <table id="transfers"><tbody></tbody></table>
      </section>

      <section>
        <h2>Inbox</h2>
        <p id="inbox-empty" class="empty">Nothing received yet.</p>
        <table id="inbox"><tbody></tbody></table>
        <p class="small">Files go to <code id="downloads"></code></p>
      </section>

      <section>
        <h2>Identities</h2>
        <ul id="identities"></ul>
        <form id="signin-form" class="row">
          <input id="signin-address" required autocomplete="username" placeholder="you@example.com">
          <input id="signin-password" required type="password" autocomplete="current-password" placeholder="password">
          <input id="signin-server" autocomplete="off" placeholder="server host:port (optional)">
          <label class="check"><input id="signin-create" type="checkbox"> create the account</label>
          <button id="signin-submit" type="submit">Sign in</button>
        </form>
        <h3>Pinned domains</h3>
        <ul id="pins"></ul>
      </section>

      <section id="status-section">
        <h2>Status</h2>
        <ul id="services"></ul>
        <table id="connections"><tbody></tbody></table>
        <ul id="errors"></ul>
      </section>
    </main>
    </body>
    </html>
    """#
}
