extension PageAssets {
    static let style = #"""
    :root { --fg: #1d2327; --muted: #68737d; --line: #dde3e8; --accent: #2456c8; --ok: #16794c; --bad: #b3261e; --bg: #f6f8fa; }
    * { box-sizing: border-box; }
    body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
    header { display: flex; gap: 1rem; align-items: baseline; padding: .8rem 1.5rem; background: #fff; border-bottom: 1px solid var(--line); }
    header h1 { margin: 0; font-size: 1.3rem; }
    #me { color: var(--muted); flex: 1; }
    main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1rem; padding: 1rem 1.5rem; }
    section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; }
    #prompts-section { grid-column: 1 / -1; border-color: var(--accent); }
    #transfers-section, #status-section { grid-column: 1 / -1; }
    td.progress { white-space: nowrap; }
    td.outcome { max-width: 24rem; }
    h2 { margin: 0 0 .6rem; font-size: 1.05rem; }
    h3 { font-size: .95rem; margin: 1rem 0 .3rem; }
    ul { list-style: none; padding: 0; margin: 0; }
    li { padding: .3rem 0; border-bottom: 1px solid var(--line); display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; }
    table { width: 100%; border-collapse: collapse; }
    td { padding: .35rem .3rem; border-bottom: 1px solid var(--line); vertical-align: middle; }
    input, select, button { font: inherit; padding: .35rem .5rem; border: 1px solid var(--line); border-radius: 5px; }
    button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
    button.plain { background: #fff; color: var(--accent); }
    button.danger { background: #fff; color: var(--bad); border-color: var(--bad); }
    .row { display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; margin: .5rem 0; }
    .wide { display: block; margin: .5rem 0; }
    .wide input { width: 100%; }
    .check { display: flex; gap: .3rem; align-items: center; }
    .drop { border: 2px dashed var(--line); border-radius: 8px; padding: .6rem; margin: .5rem 0; }
    .drop.over { border-color: var(--accent); background: #eef3ff; }
    .drop p { margin: 0 0 .4rem; color: var(--muted); }
    .pill { border-radius: 999px; padding: .1rem .6rem; font-size: .8rem; background: var(--line); }
    .pill.on { background: #d7f2e3; color: var(--ok); }
    .pill.off { background: #f9dedc; color: var(--bad); }
    .dot { width: .6rem; height: .6rem; border-radius: 50%; background: var(--line); display: inline-block; }
    .dot.on { background: var(--ok); }
    .dot.off { background: var(--bad); }
    .muted, .small, .empty { color: var(--muted); }
    .small { font-size: .85rem; }
    .grow { flex: 1; }
    progress { width: 9rem; height: .8rem; }
    .verified { color: var(--ok); font-weight: 600; }
    .failed { color: var(--bad); }
    .prompt { border: 1px solid var(--line); border-radius: 6px; padding: .6rem; margin-bottom: .5rem; }
    .prompt ul { margin: .3rem 0; max-height: 8rem; overflow: auto; }
    .prompt li { border: 0; padding: .1rem 0; }
    #notice { margin: .8rem 1.5rem 0; padding: .5rem .8rem; border-radius: 6px; background: #eef3ff; }
    #notice.error { background: #f9dedc; color: var(--bad); }
    #errors li { color: var(--bad); font-size: .85rem; }
    code { font-size: .85rem; word-break: break-all; }
    """#
}
