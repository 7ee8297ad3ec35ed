#!/usr/bin/env bash
# browser_test.sh CHROMIUM DIR: opens DIR/sankey.html and DIR/index.html (the report_fixture's) from
# disk in headless Chromium with every network request sent to a dead proxy, and checks that plotly
# drew the Sankey (its <svg class="main-svg"> holds as many sankey-node and sankey-link elements as
# the page's data-nodes / data-links say) and the F(k) curve (a marker per point), that its
# screenshot is not blank, that the summary page shows its cells table, the chart of F per cell and
# the heatmap, that the comparison page (DIR/comparison.html) drew both heatmaps of every
# architecture section and the difference Sankey (DIR/diff-*.html) its links, and that no page wrote
# to the console (a script error, a plotly warning).
# browser_test.sh CHROMIUM --sweep OUT: the same checks on a reduced sweep's OUT/index.html, its
# OUT/comparison.html and OUT/diff-*.html when present, and every OUT/cells/*/sankey.html.
# browser_test.sh CHROMIUM --page PAGE: a Sankey page alone (plot's, plot --diff's). Every drawn
# Sankey is checked against its figure by sankey_dom_check.py: nodes at their places, each in its
# layer's column, labels apart.
set -u
chromium=$1 dir=$2 sweep= single=
if [ "$dir" = --sweep ]; then sweep=$3 dir=$3; fi
if [ "$dir" = --page ]; then single=$3 dir=$(dirname "$3"); fi
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
[ -n "$single" ] || [ -f "$dir/index.html" ] || fail "$dir/index.html is missing"

browse() {  # browse WHAT URL: chromium --WHAT on URL, no network, fresh profile; console messages to $work/console.log
  local prof
  prof=$(mktemp -d -p "$work")
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --no-default-browser-check \
    --proxy-server=http://127.0.0.1:9 --proxy-bypass-list='<-loopback>' --enable-logging=stderr --v=0 \
    --user-data-dir="$prof" --virtual-time-budget=10000 --hide-scrollbars --window-size=1000,600 "$@" \
    2>"$work/browse.log"
  local rc=$?
  cat "$work/browse.log" >>"$work/chromium.log"
  grep ':CONSOLE' "$work/browse.log" >"$work/console.log"
  return $rc
}

quiet_console() {  # quiet_console PAGE: the last page logged nothing to the console
  [ -s "$work/console.log" ] && fail "$1 wrote to the console: $(head -3 "$work/console.log")"
  return 0
}

# check_cell_page PAGE: plotly drew the Sankey (when the page has edges) and the F(k) curve (when it has one).
check_cell_page() {
  local page=$1 dom=$work/page.dom
  browse --dump-dom "file://$page" >"$dom" || fail "chromium --dump-dom failed on $page: $(tail -3 "$work/chromium.log")"
  quiet_console "$page"
  local want_nodes want_links want_points nodes links points
  want_nodes=$(grep -o 'data-nodes="[0-9]*"' "$page" | grep -o '[0-9]*')
  want_links=$(grep -o 'data-links="[0-9]*"' "$page" | grep -o '[0-9]*')
  if [ -n "$want_nodes" ]; then
    [ -n "$want_links" ] || fail "$page has data-nodes but no data-links"
    grep -q 'class="main-svg"' "$dom" || fail "$page: no <svg class=\"main-svg\">: plotly did not render"
    nodes=$(grep -o 'class="sankey-node"' "$dom" | wc -l)
    links=$(grep -o 'class="sankey-link"' "$dom" | wc -l)
    [ "$nodes" = "$want_nodes" ] || fail "$page: rendered $nodes sankey nodes, expected $want_nodes"
    [ "$links" = "$want_links" ] || fail "$page: rendered $links sankey links, expected $want_links"
    echo "ok: $page: sankey rendered with $nodes nodes and $links links"
    /usr/bin/python3 "$here/sankey_dom_check.py" "$page" "$dom" || fail "$page: the Sankey is not laid out as its figure says"
  else
    grep -q 'id="no-edges"' "$dom" || fail "$page: neither a Sankey nor 'No edges'"
  fi
  want_points=$(grep -o 'id="faithfulness-curve" data-points="[0-9]*"' "$page" | sed 's/.*data-points="\([0-9]*\)"/\1/')
  if grep -q 'id="faithfulness-curve"' "$page" && [ -z "$want_points" ]; then fail "$page: the F(k) curve has no data-points"; fi
  if [ -n "$want_points" ]; then
    grep -q 'class="scatterlayer' "$dom" || fail "$page: the F(k) curve was not drawn (no scatter layer)"
    points=$(grep -o 'class="point"' "$dom" | wc -l)  # the curve's markers, and the consistent circuit's
    [ "$points" -ge "$want_points" ] || fail "$page: the F(k) curve has $points markers, expected at least $want_points"
    grep -q 'class="xtick"' "$dom" || fail "$page: the F(k) curve has no axis ticks"
    echo "ok: $page: F(k) curve rendered with $points markers"
  fi
}

# check_summary PAGE: the cells table and, when the sweep has them, the chart of F and the heatmap.
check_summary() {
  local page=$1 dom=$work/index.dom cells dots
  browse --dump-dom "file://$page" >"$dom" || fail "chromium --dump-dom failed on $page"
  quiet_console "$page"
  grep -q '<table id="cells">' "$dom" || fail "summary: no cells table"
  cells=$(grep -o '<tr class="cell"' "$dom" | wc -l)
  [ "$cells" -gt 0 ] || fail "summary: the cells table has no rows"
  if grep -q 'id="faithfulness-plot"' "$page"; then
    grep -q '>F consistent</th>' "$dom" || fail "summary: a chart of F but no F column"
    dots=$(grep -o '<circle class="fdot"' "$dom" | wc -l)
    [ "$dots" -gt 0 ] || fail "summary: the chart of F has no dots"
    echo "ok: summary: F columns and $dots cells in the chart of F"
  fi
  echo "ok: summary page shows $cells cells"
}

if [ -n "$single" ]; then
  check_cell_page "$single"
  exit 0
fi
# check_comparison PAGE: one section per architecture, and plotly drew every heatmap of it (the edge x
# cell matrix and the Jaccard matrix: a <g class="hm"> inside each plot's <div>).
check_comparison() {
  local page=$1 dom=$work/comparison.dom
  browse --dump-dom "file://$page" >"$dom" || fail "chromium --dump-dom failed on $page"
  quiet_console "$page"
  /usr/bin/python3 - "$page" "$dom" <<'EOF2' || fail "$page: the comparison page did not render (see above)"
import re, sys
src, dom = open(sys.argv[1]).read(), open(sys.argv[2]).read()
sections = re.findall(r'<div class="arch-section" id="[^"]*" data-arch="([^"]*)" data-cells="(\d+)"', dom)
if not sections and 'id="no-comparison"' not in dom:
    sys.exit(f"no architecture section and no 'nothing to compare'")
want = re.findall(r'<div class="plot (?:heatmap|jaccard)" id="([^"]*)"', src)
parts = re.split(r'<div class="plot (?:heatmap|jaccard)[^"]*" id="([^"]*)"', dom)  # plotly adds classes
drawn = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
for pid in want:
    body = drawn.get(pid, "")
    if 'class="main-svg"' not in body or 'class="hm"' not in body:
        sys.exit(f"{pid}: plotly drew no heatmap")
print(f"ok: {sys.argv[1]}: {len(sections)} architecture section(s) " +
      ", ".join(f"{a} ({n} cells)" for a, n in sections) + f"; {len(want)} heatmaps drawn")
EOF2
}

if [ -n "$sweep" ]; then
  check_summary "$sweep/index.html"
  if [ -f "$sweep/comparison.html" ]; then check_comparison "$sweep/comparison.html"; fi
  n=0
  for page in "$sweep"/diff-*.html; do  # `plot --diff ... --out OUT` pages, when a test wrote some there
    [ -f "$page" ] || continue
    grep -q 'data-diff="1"' "$page" || fail "$page: not marked as a difference (data-diff)"
    check_cell_page "$page"
    n=$((n + 1))
  done
  [ "$n" = 0 ] || echo "ok: $n difference page(s)"
  n=0
  for page in "$sweep"/cells/*/sankey.html; do
    [ -f "$page" ] || continue
    check_cell_page "$page"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || fail "$sweep/cells holds no sankey.html"
  echo "ok: $n cell pages"
  exit 0
fi

[ -f "$dir/sankey.html" ] || fail "$dir/sankey.html is missing (the report_fixture test writes it)"
# --- Sankey and F(k): plotly rendered them --------------------------------------------------------
check_cell_page "$dir/sankey.html"
grep -q 'id="faithfulness-curve"' "$dir/sankey.html" || fail "the fixture's page has no F(k) curve"
# Node labels carry the notebook's "name<br>sum": plotly renders the name as text.
grep -q '>l0.h3<' "$work/page.dom" || fail "node label l0.h3 not rendered"

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
check_summary "$dir/index.html"
grep -q 'id="faithfulness-plot"' "$work/index.dom" || fail "summary: no chart of F"
grep -q 'id="heatmap"' "$work/index.dom" || fail "summary: no heatmap"
grep -q 'id="recurrence"' "$work/index.dom" || fail "summary: no recurrence table"
browse --screenshot="$work/index.png" "file://$dir/index.html" >/dev/null || fail "chromium --screenshot failed on index.html"
[ -s "$work/index.png" ] || fail "no summary screenshot"
echo "ok: summary page shows the chart of F, the heatmap and the recurrence table"

# --- Comparison page: two architectures, each its own section with its heatmaps ------------------
said=$(check_comparison "$dir/comparison.html") || { echo "$said"; exit 1; }
echo "$said"
grep -q '2 architecture section(s) BM1.2x16 (3 cells), BM2.24x14 (4 cells); 4 heatmaps drawn' <<<"$said" ||
  fail "comparison page: expected the sections BM1.2x16 (3 cells, the flagged one left out) and BM2.24x14 (4 cells)"
grep -q 'id="flagged-left-out"' "$work/comparison.dom" || fail "comparison page: the flagged cell is not said to be left out"
grep -q 'class="finetunes" id="finetunes-BM2.24x14-0"' "$work/comparison.dom" || fail "comparison page: no recurrence table for BM2"
grep -q 'id="comparison-link" href="comparison.html"' "$work/index.dom" || fail "summary: no link to comparison.html"

# --- Difference Sankey ----------------------------------------------------------------------------
n=0
for page in "$dir"/diff-*.html; do
  [ -f "$page" ] || continue
  grep -q 'data-diff="1"' "$page" || fail "$page: not marked as a difference (data-diff)"
  check_cell_page "$page"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "$dir holds no diff-*.html (the report_fixture test writes one)"
echo "ok: $n difference page(s)"
