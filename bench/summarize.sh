#!/usr/bin/env bash
# Summarize one raw result file of bench/archive.sh as Markdown tables.
#
#   bench/summarize.sh bench/results/archive-<run>.tsv
#
# Medians and p90 (nearest rank) per tool x segment x op for wall time, CPU time (user + sys)
# and peak RSS; the ratios walship/pgBackRest and walship/wal-rus of the medians; and the
# goals of the archive benchmark, each marked met or not met. The stored sizes are read from
# the matching archive-<run>-sizes.tsv when it exists.
set -euo pipefail

[ $# -eq 1 ] || {
  echo "usage: bench/summarize.sh RESULTS.tsv" >&2
  exit 2
}
raw=$1
[ -f "$raw" ] || {
  echo "bench/summarize.sh: no such file: $raw" >&2
  exit 1
}
sizes=${raw%.tsv}-sizes.tsv
[ -f "$sizes" ] || sizes=/dev/null

awk -F'\t' '
function label(t) {
  return t == "pgbackrest" ? "pgBackRest" : (t == "walrus" ? "wal-rus" : t)
}
# Copy the cnt values of metric m for key k into S[1..cnt], sorted ascending.
function load(m, k, cnt,   i, j, v) {
  for (i = 1; i <= cnt; i++) S[i] = V[m, k, i]
  for (i = 2; i <= cnt; i++) {
    v = S[i]
    for (j = i - 1; j >= 1 && S[j] > v; j--) S[j + 1] = S[j]
    S[j + 1] = v
  }
}
function median(cnt) {
  return cnt % 2 ? S[(cnt + 1) / 2] : (S[cnt / 2] + S[cnt / 2 + 1]) / 2
}
function p90(cnt,   r) {
  r = int(0.9 * cnt)
  if (r < 0.9 * cnt) r++
  return S[r < 1 ? 1 : r]
}
function ratio(a, b) {
  return (b > 0 && a != "") ? sprintf("%.2f", a / b) : "n/a"
}
function verdict(r, limit) {
  if (r == "n/a") return "not measured"
  return (r + 0 <= limit) ? "met" : "NOT met"
}
FILENAME != ARGV[1] {
  if (FNR > 1) stored[$1, $2] = $4
  next
}
FNR == 1 { next }
{
  tool = $1; seg = $2; op = $4
  k = op SUBSEP seg SUBSEP tool
  c = ++n[k]
  V["wall", k, c] = $6 / 1000.0
  V["cpu", k, c] = $7 + $8
  V["rss", k, c] = $12 / 1024.0
  if (!(tool in has_tool)) { has_tool[tool] = 1 }
  if (!(seg in has_seg)) { has_seg[seg] = 1; segs[++nsegs] = seg }
  if (tool == "walship" && $12 > max_rss) max_rss = $12
}
END {
  ntools = 0
  split("walship pgbackrest walrus", all, " ")
  for (i = 1; i <= 3; i++) if (all[i] in has_tool) tools[++ntools] = all[i]
  ops[1] = "push"; ops[2] = "get"

  print "### Per segment: medians (p90)"
  print ""
  print "| op | segment | tool | runs | wall ms | CPU ms (user+sys) | peak RSS MiB | stored MiB |"
  print "|---|---|---|---:|---:|---:|---:|---:|"
  for (o = 1; o <= 2; o++) for (s = 1; s <= nsegs; s++) for (t = 1; t <= ntools; t++) {
    k = ops[o] SUBSEP segs[s] SUBSEP tools[t]
    cnt = n[k]
    if (!cnt) continue
    load("wall", k, cnt); wm = median(cnt); wp = p90(cnt)
    load("cpu", k, cnt); cm = median(cnt); cp = p90(cnt)
    load("rss", k, cnt); rm = median(cnt); rp = p90(cnt)
    W[k] = wm; C[k] = cm; R[k] = rm
    st = (ops[o] == "push" && (tools[t], segs[s]) in stored) ? sprintf("%.2f", stored[tools[t], segs[s]] / 1048576) : ""
    printf "| %s | %s | %s | %d | %.1f (%.1f) | %.0f (%.0f) | %.1f (%.1f) | %s |\n",
      ops[o], segs[s], label(tools[t]), cnt, wm, wp, cm, cp, rm, rp, st
  }
  print ""
  print "### Ratios of the medians: walship / other (below 1: walship needs less)"
  print ""
  print "| op | segment | wall vs pgBackRest | CPU vs pgBackRest | RSS vs pgBackRest | wall vs wal-rus | CPU vs wal-rus | RSS vs wal-rus |"
  print "|---|---|---:|---:|---:|---:|---:|---:|"
  for (o = 1; o <= 2; o++) for (s = 1; s <= nsegs; s++) {
    w = ops[o] SUBSEP segs[s] SUBSEP "walship"
    p = ops[o] SUBSEP segs[s] SUBSEP "pgbackrest"
    r = ops[o] SUBSEP segs[s] SUBSEP "walrus"
    printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", ops[o], segs[s],
      ratio(W[w], W[p]), ratio(C[w], C[p]), ratio(R[w], R[p]),
      ratio(W[w], W[r]), ratio(C[w], C[r]), ratio(R[w], R[r])
    RW[ops[o], segs[s], "pgbackrest"] = ratio(W[w], W[p])
    RW[ops[o], segs[s], "walrus"] = ratio(W[w], W[r])
  }
  print ""
  print "### Goals"
  print ""
  print "| goal | segment | measured | verdict |"
  print "|---|---|---:|---|"
  for (s = 1; s <= nsegs; s++) {
    v = RW["push", segs[s], "pgbackrest"]
    printf "| archive-push wall <= 0.5x pgBackRest | %s | %s | %s |\n", segs[s], v, verdict(v, 0.5)
  }
  for (s = 1; s <= nsegs; s++) {
    v = RW["push", segs[s], "walrus"]
    printf "| archive-push wall <= 0.65x wal-rus | %s | %s | %s |\n", segs[s], v, verdict(v, 0.65)
  }
  for (s = 1; s <= nsegs; s++) {
    v = RW["get", segs[s], "pgbackrest"]
    printf "| archive-get wall <= 0.5x pgBackRest | %s | %s | %s |\n", segs[s], v, verdict(v, 0.5)
  }
  if ("walship" in has_tool)
    printf "| walship peak RSS <= 32 MiB (largest of all its runs) | all | %.1f MiB | %s |\n",
      max_rss / 1024, (max_rss <= 32 * 1024) ? "met" : "NOT met"
  else
    print "| walship peak RSS <= 32 MiB (largest of all its runs) | all | n/a | not measured |"
}
' "$raw" "$sizes"
