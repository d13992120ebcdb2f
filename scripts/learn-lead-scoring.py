#!/usr/bin/env python3
"""Learns the points of the lead-scoring decision tables from past conversions.

Naive-Bayes-style log-odds: for every value of a column (or band of a number), the points are
10 x (log-odds of conversion among leads with that value - log-odds among all leads), rounded,
with one lead of each outcome added (Laplace) so that rare values stay small. Values seen on
fewer than MIN_ROWS leads get no rule (0 points). Fit (who they are) and engagement (what they
did) are two `hit: sum` tables; the grade table's thresholds are the scores above which the
top 30 % (hot) and the top 65 % (warm or hot) of the learning rows fall.

Only columns a new lead has are used: never Tags, Lead Quality, Lead Profile or the four
Asymmetrique columns (filled in after the company contacted the lead), nor Converted.

    scripts/learn-lead-scoring.py ../shared/data/leads/Leads.csv processes/lead-scoring.yaml
    scripts/learn-lead-scoring.py ../shared/data/leads/Leads.csv OUT.yaml --holdout 5

With --holdout N, rows 1, 1+N, 1+2N, ... (data rows, counted from 1) are left out of the
learning, so that `ciclo leads score-report --processes DIR --every N` measures the tables on
rows they never saw. Standard library only. The cleaning here must match
processes/imports/x-education.yaml (`Select` and empty are no value; `google` is `Google`).
"""
import csv
import math
import sys

MIN_ROWS = 20
UNKNOWN = "unknown"
EMPTY = {"", "Select"}
VALUE_MAPS = {"Lead Source": {"google": "Google"}}

# (lead field, CSV column, bands or None). Bands are inclusive integer ranges.
FIT = [
    ("origin", "Lead Origin", None),
    ("source", "Lead Source", None),
    ("occupation", "What is your current occupation", None),
    ("specialization", "Specialization", None),
    ("do_not_email", "Do Not Email", None),
]
TIME_BANDS = [(0, 0), (1, 119), (120, 299), (300, 599), (600, 899), (900, 1199), (1200, 1499), (1500, None)]
VISIT_BANDS = [(0, 0), (1, 1), (2, 3), (4, 5), (6, 9), (10, None)]
ENGAGEMENT = [
    ("time_on_site", "Total Time Spent on Website", TIME_BANDS),
    ("total_visits", "TotalVisits", VISIT_BANDS),
    ("last_activity", "Last Activity", None),
    ("last_notable_activity", "Last Notable Activity", None),
]


def clean(column, text):
    text = text.strip()
    if text in EMPTY:
        return None
    return VALUE_MAPS.get(column, {}).get(text, text)


def category(row, column, bands):
    value = clean(column, row[column])
    if column == "Do Not Email":
        return "true" if value == "Yes" else "false"
    if value is None:
        return UNKNOWN
    if bands is None:
        return value
    number = float(value)
    for low, high in bands:
        if number >= low and (high is None or number <= high):
            return (low, high)
    return UNKNOWN


def learn(rows, features):
    converted = sum(1 for r in rows if r["Converted"] == "1")
    base = math.log(converted / (len(rows) - converted))
    tables = []
    for field, column, bands in features:
        counts = {}
        for r in rows:
            c = counts.setdefault(category(r, column, bands), [0, 0])
            c[0 if r["Converted"] == "1" else 1] += 1
        points = {}
        for value, (yes, no) in counts.items():
            if yes + no >= MIN_ROWS:
                p = round(10 * (math.log((yes + 1) / (no + 1)) - base))
                if p != 0:
                    points[value] = p
        tables.append((field, column, bands, points))
    return tables


def score(row, tables):
    return sum(points.get(category(row, column, bands), 0) for _, column, bands, points in tables)


def input_expr(field, bands):
    if field == "do_not_email":
        return "lead.do_not_email ?? false"
    if bands is None:
        return f'lead.{field} ?? "{UNKNOWN}"'
    return f"lead.{field} ?? -1"


def cell(value, bands):
    if bands is None:
        if value in ("true", "false"):
            return value
        return "[" + yaml_text(value) + "]"
    if value == UNKNOWN:
        return '"< 0"'
    low, high = value
    return f'">= {low}"' if high is None else f'"[{low}..{high}]"'


def yaml_text(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_table(out, name, comment, tables):
    out.write(f"  # {comment}\n  {name}:\n    hit: sum\n")
    out.write("    inputs:\n")
    for field, _, bands, _ in tables:
        out.write(f"      - {yaml_text(input_expr(field, bands))}\n")
    out.write(f"    outputs: [{name.split('-')[1]}]\n    rules:\n")
    for i, (field, column, bands, points) in enumerate(tables):
        out.write(f"      # {column}\n")
        for value, p in sorted(points.items(), key=lambda kv: (-kv[1], str(kv[0]))):
            cells = ['"-"'] * len(tables)
            cells[i] = cell(value, bands)
            out.write(f"      - {{ when: [{', '.join(cells)}], then: [{p}] }}\n")


def auc(scores, labels):
    pairs = sorted(zip(scores, labels))
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        rank = (i + j) / 2 + 1
        rank_sum += rank * sum(1 for k in range(i, j + 1) if pairs[k][1])
        i = j + 1
    pos = sum(labels)
    neg = len(labels) - pos
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def main():
    args = sys.argv[1:]
    holdout = None
    if "--holdout" in args:
        at = args.index("--holdout")
        holdout = int(args[at + 1])
        del args[at : at + 2]
    source, target = args
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    learning = [r for i, r in enumerate(rows) if holdout is None or i % holdout != 0]
    fit = learn(learning, FIT)
    engagement = learn(learning, ENGAGEMENT)
    scores = sorted(score(r, fit) + score(r, engagement) for r in learning)
    hot = scores[int(len(scores) * 0.70)]
    warm = scores[int(len(scores) * 0.35)]
    with open(target, "w", encoding="utf-8") as out:
        out.write("# Lead scoring: fit (who they are) + engagement (what they did) = score; the grade\n")
        out.write("# table turns the score into hot, warm or cold. Points learned by\n")
        out.write(f"# scripts/learn-lead-scoring.py from {len(learning)} leads of the X Education file\n")
        out.write("# (log-odds of conversion per value, x 10); edit them by hand or learn them again\n")
        out.write("# (docs/leads.md). A value without a rule scores 0.\n")
        out.write("tables:\n")
        write_table(out, "lead-fit", "Who they are: origin, source, occupation, specialization, opt-out.", fit)
        write_table(out, "lead-engagement", "What they did: time on the site, visits, last activities.", engagement)
        out.write("  # The thresholds: the first matching rule gives the grade.\n")
        out.write("  lead-grade:\n    hit: first\n    inputs: [score]\n    outputs: [grade, reason]\n    rules:\n")
        out.write(f'      - {{ when: [">= {hot}"], then: [\'"hot"\', \'"score " + score + " >= {hot}"\'] }}\n')
        out.write(f'      - {{ when: [">= {warm}"], then: [\'"warm"\', \'"score " + score + " >= {warm}"\'] }}\n')
        out.write(f'      - {{ when: ["-"], then: [\'"cold"\', \'"cold: score " + score + " below the warm threshold {warm}"\'] }}\n')
    learned = [score(r, fit) + score(r, engagement) for r in learning]
    print(f"learned from {len(learning)} rows: AUC {auc(learned, [r['Converted'] == '1' for r in learning]):.4f}; hot >= {hot}, warm >= {warm}")
    if holdout:
        held = [r for i, r in enumerate(rows) if i % holdout == 0]
        s = [score(r, fit) + score(r, engagement) for r in held]
        print(f"held out {len(held)} rows (1, {1 + holdout}, {1 + 2 * holdout}, ...): AUC {auc(s, [r['Converted'] == '1' for r in held]):.4f}")


if __name__ == "__main__":
    main()
