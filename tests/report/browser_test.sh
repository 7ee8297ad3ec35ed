#!/usr/bin/env bash
# browser_test.sh CHROMIUM DIR: opens DIR/sankey.html and DIR/index.html from disk in headless
# Chromium with every network request sent to a dead proxy, and checks that plotly drew the Sankey
# (its <svg class="main-svg"> holds as many sankey-node and sankey-link elements as the page's
# data-nodes / data-links say), that its screenshot is not blank, and that the summary page shows
# its cells table and heatmap.
set -u
chromium=$1 dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
[ -f "$dir/sankey.html" ] || fail "$dir/sankey.html is missing (the report_fixture test writes it)"
[ -f "$dir/index.html" ] || fail "$dir/index.html is missing"

browse() {  # browse WHAT URL: chromium --WHAT on URL, no network, fresh profile
  local prof
  prof=$(mktemp -d -p "$work")
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --no-default-browser-check \
    --proxy-server=http://127.0.0.1:9 --proxy-bypass-list='<-loopback>' \
    --user-data-dir="$prof" --virtual-time-budget=10000 --hide-scrollbars --window-size=1000,600 "$@" \
    2>>"$work/chromium.log"
}

# --- Sankey: plotly rendered it ------------------------------------------------------------------
browse --dump-dom "file://$dir/sankey.html" >"$work/sankey.dom" || fail "chromium --dump-dom failed: $(tail -3 "$work/chromium.log")"
want_nodes=$(grep -o 'data-nodes="[0-9]*"' "$dir/sankey.html" | grep -o '[0-9]*')
want_links=$(grep -o 'data-links="[0-9]*"' "$dir/sankey.html" | grep -o '[0-9]*')
[ -n "$want_nodes" ] && [ -n "$want_links" ] || fail "sankey.html has no data-nodes/data-links"
grep -q 'class="main-svg"' "$work/sankey.dom" || fail "no <svg class=\"main-svg\">: plotly did not render"
nodes=$(grep -o 'class="sankey-node"' "$work/sankey.dom" | wc -l)
links=$(grep -o 'class="sankey-link"' "$work/sankey.dom" | wc -l)
[ "$nodes" = "$want_nodes" ] || fail "rendered $nodes sankey nodes, expected $want_nodes"
[ "$links" = "$want_links" ] || fail "rendered $links sankey links, expected $want_links"
# Node labels carry the notebook's "name<br>sum": plotly renders the name as text.
grep -q '>l0.h3<' "$work/sankey.dom" || fail "node label l0.h3 not rendered"
echo "ok: sankey rendered with $nodes nodes and $links links"

# --- Sankey: the picture is not blank -------------------------------------------------------------
browse --screenshot="$work/sankey.png" "file://$dir/sankey.html" >/dev/null || fail "chromium --screenshot failed"
[ -s "$work/sankey.png" ] || fail "no screenshot written"
/usr/bin/python3 - "$work/sankey.png" <<'EOF' || fail "the Sankey screenshot is blank"
# Decodes the PNG (8-bit RGB/RGBA) and counts pixels that are not near-white: a page with only its
# heading is under 1%, a drawn Sankey far above 2%.
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", data[pos + 8:pos + 18])
    elif kind == b"IDAT":
        idat += data[pos + 8:pos + 8 + n]
    pos += 12 + n
assert depth == 8 and ctype in (2, 6), f"PNG type {ctype}/{depth} not handled"
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, busy = bytearray(stride), 0
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    busy += sum(1 for x in range(0, stride, bpp) if min(line[x:x + 3]) < 200)
    prev = line
print(f"screenshot: {busy} of {w * h} pixels drawn ({100 * busy / (w * h):.1f}%)")
sys.exit(0 if busy > w * h // 50 else 1)
EOF

# --- Summary page ---------------------------------------------------------------------------------
browse --dump-dom "file://$dir/index.html" >"$work/index.dom" || fail "chromium --dump-dom failed on index.html"
grep -q '<table id="cells">' "$work/index.dom" || fail "summary: no cells table"
cells=$(grep -o '<tr class="cell"' "$work/index.dom" | wc -l)
[ "$cells" -gt 0 ] || fail "summary: the cells table has no rows"
grep -q 'id="heatmap"' "$work/index.dom" || fail "summary: no heatmap"
grep -q 'id="recurrence"' "$work/index.dom" || fail "summary: no recurrence table"
browse --screenshot="$work/index.png" "file://$dir/index.html" >/dev/null || fail "chromium --screenshot failed on index.html"
[ -s "$work/index.png" ] || fail "no summary screenshot"
echo "ok: summary page shows $cells cells, the heatmap and the recurrence table"
