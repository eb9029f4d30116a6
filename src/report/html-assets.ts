/** The report site's inline CSS and JS: no external resource, so pages work from file:// and offline. */

export const CSS = `
:root{color-scheme:light dark;--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--head:#f6f8fa;
--pass:#dafbe1;--skip:#fff8c5;--fail:#ffebe9;--error:#ffe5c2;--missing:#eaeef2;--link:#0969da;--ring:#cf222e;--warn:#9a6700}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;
--head:#151b23;--pass:#12361f;--skip:#3b2e00;--fail:#4a1519;--error:#4a2a00;--missing:#262c36;--link:#4493f8;--ring:#f85149;--warn:#d29922}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header,main{padding:0 max(1rem,env(safe-area-inset-left));max-width:90rem;margin:0 auto}
nav{display:flex;flex-wrap:wrap;gap:1rem;padding:.75rem 0;border-bottom:1px solid var(--line)}
a{color:var(--link)}
h1{font-size:1.4rem;margin:.8rem 0}h2{font-size:1.15rem}
.muted,small{color:var(--muted)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%;margin:.5rem 0}
table{border-collapse:collapse}
th,td{border:1px solid var(--line);padding:.3rem .55rem}
thead th{background:var(--head);font-weight:600;vertical-align:bottom}
.matrix td{text-align:center;min-width:2.6rem}
.matrix tbody th{position:sticky;left:0;z-index:1;background:var(--head);text-align:left;white-space:nowrap;font-weight:500}
.matrix td a{display:block;text-decoration:none}
td[data-verdict=pass]{background:var(--pass)}td[data-verdict=skip]{background:var(--skip)}
td[data-verdict=fail]{background:var(--fail)}td[data-verdict=error]{background:var(--error)}
td[data-verdict=missing]{background:var(--missing)}
.matrix td .flag{font-size:.7em;vertical-align:super;margin-left:.1em;color:var(--warn)}
td[data-change=regressed]{outline:2px solid var(--ring);outline-offset:-3px}
.filter{display:inline-flex;gap:.4rem;align-items:center;padding:.4rem 0;cursor:pointer}
body:has(#only-problems:checked) tr.all-green{display:none}
dl.glossary{display:grid;grid-template-columns:auto 1fr;gap:.3rem .8rem}dl.glossary dd{margin:0}
dialog{width:min(60rem,calc(100vw - 1rem));max-height:calc(100dvh - 1rem);padding:0;border:1px solid var(--line);
border-radius:.5rem;background:var(--bg);color:var(--fg)}
dialog::backdrop{background:rgb(0 0 0/.55)}
dialog article{padding:.2rem 1rem 1rem}
dialog .bar{display:flex;justify-content:space-between;align-items:center;gap:1rem}
dialog h2{overflow-wrap:anywhere}
pre{background:var(--head);border:1px solid var(--line);border-radius:.3rem;padding:.5rem;margin:.3rem 0 .8rem;
max-height:50vh;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85rem}
button{font:inherit;padding:.3rem .8rem}
@media (max-width:40rem){body{font-size:14px}th,td{padding:.25rem .35rem}}
`.trim();

/** Opens a cell's dialog on click (and from a #anchor link), closes it on Escape or a backdrop click. */
export const JS = `
(() => {
  const dialogOf = (id) => { const d = id && document.getElementById(id); return d instanceof HTMLDialogElement ? d : null; };
  const open = (d) => { if (!d.open) d.showModal(); history.replaceState(null, "", "#" + d.id); };
  document.addEventListener("click", (e) => {
    const a = e.target instanceof Element && e.target.closest("a[data-open]");
    const d = a && dialogOf(a.getAttribute("data-open"));
    if (d) { e.preventDefault(); open(d); }
  });
  for (const d of document.querySelectorAll("dialog")) {
    d.addEventListener("click", (e) => { if (e.target === d) d.close(); });
    d.addEventListener("close", () => history.replaceState(null, "", location.pathname + location.search));
  }
  // Deep links (x86_64.html#<anchor>, the same anchors as the Markdown), on load and within the page.
  const fromHash = () => {
    const d = dialogOf(decodeURIComponent(location.hash.slice(1)));
    if (!d) return;
    for (const o of document.querySelectorAll("dialog[open]")) if (o !== d) o.close();
    open(d);
  };
  addEventListener("hashchange", fromHash);
  fromHash();
})();
`.trim();
