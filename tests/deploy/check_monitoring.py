#!/usr/bin/env python3
"""Checks of the chart's PrometheusRule and Grafana dashboard, for tests/deploy/alerts.sh.

    check_monitoring.py rules RENDERED.yaml OUT_DIR
        Writes OUT_DIR/rules-full.yaml (the PrometheusRule's spec, for
        "promtool check rules") and OUT_DIR/rules.yaml (the same with only the
        summary annotation, for "promtool test rules", whose tests assert it).
    check_monitoring.py annotations RENDERED.yaml
        Every alert has a severity, a summary, a description that says what to
        check and where its runbook is, and a runbook_url when runbookUrl is set.
    check_monitoring.py runbooks RENDERED.yaml [RENDERED.yaml ...] CHART_README MAIN_README
        Every alert of the renders has a "#### <alert>" runbook section in the
        chart README and is named in the main README's runbook section; every
        runbook section is an alert of one of the renders.
    check_monitoring.py exported METRICS.txt
        Prints the sample names a /metrics scrape declares (from its # TYPE
        lines, so families without samples yet count too).
    check_monitoring.py names METRICS.txt [--dashboard JSON] [--rules RENDERED.yaml]
            [--unexported-in-alerts NAME=ALERT,ALERT ...]
        Every fiskil_token_refresher_* name the dashboard or the rules use is one
        the scrape declares; a name the binary does not export yet may appear
        only in the alerts named for it. Every dashboard panel queries at least
        one exported metric.
    check_monitoring.py queries JSON [VARIABLE=VALUE ...]
        Prints one line per dashboard query, "PANEL<TAB>EXPR", with the
        dashboard's variables replaced by the values given (others match all)
        and a 1m interval.
    check_monitoring.py live-queries PROMETHEUS_URL JSON [VARIABLE=VALUE ...]
        Every dashboard query evaluates on a real Prometheus and returns data.
    check_monitoring.py live-rules PROMETHEUS_URL COUNT
        The Prometheus has loaded COUNT alerting rules and none failed to evaluate.
    check_monitoring.py live-alerts PROMETHEUS_URL [ALERT[:LABEL=VALUE] ...] [--wait SECONDS]
        Exactly these alerts (state firing; the label given must match) and no
        other Fiskil* alert, firing or pending; with --wait, polls until so.

Prints "ok   ..." / "FAIL ..." lines; exits 1 if any check failed.
"""

import contextlib
import io
import json
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml

PREFIX = "fiskil_token_refresher_"
NAME_RE = re.compile(r"\b" + PREFIX + r"[a-zA-Z0-9_]+")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


class Checker:
    def __init__(self):
        self.failed = 0

    def check(self, description, condition, detail=""):
        if condition:
            print(f"ok   {description}")
        else:
            self.failed += 1
            print(f"FAIL {description}" + (f" ({detail})" if detail else ""))
        return bool(condition)


def rule_object(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        sys.exit(f"{path}: expected one PrometheusRule, found {len(rules)}")
    return rules[0]


def alerts(obj):
    return [r for g in obj["spec"]["groups"] for r in g["rules"] if "alert" in r]


def cmd_rules(rendered, out_dir):
    obj = rule_object(rendered)
    groups = obj["spec"]["groups"]
    with open(f"{out_dir}/rules-full.yaml", "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    for rule in (r for g in groups for r in g["rules"]):
        rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    with open(f"{out_dir}/rules.yaml", "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    print(f"{len(alerts(obj))} alerts: {', '.join(a['alert'] for a in alerts(obj))}")
    return 0


def cmd_annotations(rendered):
    ck = Checker()
    obj = rule_object(rendered)
    values_url = None
    for a in alerts(obj):
        name, ann, labels = a["alert"], a.get("annotations") or {}, a.get("labels") or {}
        ck.check(f"{name}: severity label", bool(labels.get("severity")), str(labels))
        ck.check(f"{name}: summary", len(ann.get("summary", "")) > 20, ann.get("summary"))
        desc = ann.get("description", "")
        ck.check(f"{name}: description says what to check", "Check " in desc and len(desc) > 120, desc)
        url = ann.get("runbook_url")
        if url:
            values_url = url.split("#")[0]
            ck.check(f"{name}: runbook_url ends with #{name.lower()}", url.endswith("#" + name.lower()), url)
            ck.check(f"{name}: description points to the runbook URL", url in desc, desc)
        else:
            ck.check(f"{name}: description points to the README runbook section",
                     f'"Alert runbook", {name}.' in desc, desc)
    if values_url:
        ck.check("every alert has a runbook_url", all((a.get("annotations") or {}).get("runbook_url")
                                                    for a in alerts(obj)))
    return 1 if ck.failed else 0


def cmd_runbooks(*args):
    *renders, chart_readme, main_readme = args
    ck = Checker()
    chart = open(chart_readme).read()
    main = open(main_readme).read()
    chart_section = chart.split("## Alert runbook", 1)
    ck.check("chart README has an \"## Alert runbook\" section", len(chart_section) == 2)
    headings = set(re.findall(r"^#### (\w+)$", chart_section[-1], re.M))
    main_section = re.split(r"^## Alerts and dashboard$", main, maxsplit=1, flags=re.M)
    ck.check("main README has an \"## Alerts and dashboard\" section", len(main_section) == 2)
    main_text = re.split(r"^## ", main_section[-1], maxsplit=1, flags=re.M)[0]
    names = list(dict.fromkeys(a["alert"] for rendered in renders for a in alerts(rule_object(rendered))))
    for name in names:
        ck.check(f"{name}: \"#### {name}\" in the chart README's runbook", name in headings)
        ck.check(f"{name}: in the main README's alert table", f"`{name}`" in main_text)
    ck.check("no runbook section for an alert that does not exist", headings <= set(names),
             str(sorted(headings - set(names))))
    return 1 if ck.failed else 0


def exported(metrics_path):
    names = set()
    for line in open(metrics_path):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m and m.group(1).startswith(PREFIX):
            for suffix in SUFFIXES.get(m.group(2), ("",)):
                names.add(m.group(1) + suffix)
    return names


def cmd_exported(metrics_path):
    for name in sorted(exported(metrics_path)):
        print(name)
    return 0


def dashboard_queries(dash):
    """(panel title, query) for every panel target and template variable."""
    for p in dash["panels"]:
        for t in p.get("targets") or []:
            yield p["title"], t["expr"]
    for v in dash["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            yield f"variable {v['name']}", q["query"]


def cmd_names(metrics_path, dashboard, rendered, unexported):
    ck = Checker()
    have = exported(metrics_path)
    ck.check(f"the scrape declares {len(have)} fiskil_token_refresher_* sample names", len(have) >= 10,
             str(sorted(have)))
    if dashboard:
        dash = json.load(open(dashboard))
        panels = {}
        for title, expr in dashboard_queries(dash):
            used = set(NAME_RE.findall(expr))
            panels.setdefault(title, set()).update(used)
            for name in sorted(used):
                ck.check(f"dashboard \"{title}\": {name} is exported", name in have)
        for title, used in panels.items():
            ck.check(f"dashboard \"{title}\": queries an exported metric", bool(used & have))
    if rendered:
        for a in alerts(rule_object(rendered)):
            for name in sorted(set(NAME_RE.findall(a["expr"]))):
                allowed = a["alert"] in unexported.get(name, ())
                ck.check(f"alert {a['alert']}: {name} is exported"
                         + (" (or not yet, and allowed in this alert)" if allowed else ""),
                         name in have or allowed)
    return 1 if ck.failed else 0


def cmd_queries(dashboard, *values):
    dash = json.load(open(dashboard))
    subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            subst["$" + v["name"]] = ".*"
    for pair in values:
        name, value = pair.split("=", 1)
        subst["$" + name] = value
    for title, expr in dashboard_queries(dash):
        if title.startswith("variable "):
            m = re.match(r"label_values\((.*),\s*\w+\)$", expr)
            expr = m.group(1) if m else expr
        for k in sorted(subst, key=len, reverse=True):
            expr = expr.replace(k, subst[k])
        print(f"{title}\t{expr}")
    return 0


def prometheus_get(url, path, **params):
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def cmd_live_queries(url, dashboard, *values):
    ck = Checker()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        cmd_queries(dashboard, *values)
    for line in text.getvalue().splitlines():
        title, expr = line.split("\t", 1)
        try:
            result = prometheus_get(url, "/api/v1/query", query=expr)["result"]
            ck.check(f"dashboard \"{title}\": {len(result)} series from {expr}", result)
        except (OSError, RuntimeError, ValueError) as e:  # a PromQL error fails the check
            ck.check(f"dashboard \"{title}\": {expr}", False, str(e))
    return 1 if ck.failed else 0


def cmd_live_rules(url, count):
    ck = Checker()
    rules = [r for g in prometheus_get(url, "/api/v1/rules")["groups"] for r in g["rules"]]
    ck.check(f"Prometheus loaded {count} alerting rules", len(rules) == int(count), str(len(rules)))
    for r in rules:
        ck.check(f"{r['name']}: evaluated without error (health {r.get('health')})",
                 r.get("health") == "ok", r.get("lastError", ""))
    return 1 if ck.failed else 0


def cmd_live_alerts(url, args):
    wait = 0.0
    if "--wait" in args:
        at = args.index("--wait")
        wait = float(args[at + 1])
        args = args[:at] + args[at + 2:]
    want = {}
    for a in args:
        name, _, label = a.partition(":")
        want[name] = label.split("=", 1) if label else None
    deadline = time.monotonic() + wait
    while True:
        got = [a for a in prometheus_get(url, "/api/v1/alerts")["alerts"]
               if a["labels"].get("alertname", "").startswith("Fiskil")]
        names = {a["labels"]["alertname"] for a in got}
        ok = names == set(want) and all(
            a["state"] == "firing" and (want[n] is None or a["labels"].get(want[n][0]) == want[n][1])
            for a in got for n in [a["labels"]["alertname"]])
        if ok or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for a in got:
        print(f"     {a['state']} {a['labels']}")
    ck = Checker()
    ck.check(f"alerts firing: {', '.join(args) or 'none'}", ok)
    return 1 if ck.failed else 0


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "rules":
        return cmd_rules(*args)
    if cmd == "annotations":
        return cmd_annotations(*args)
    if cmd == "runbooks":
        return cmd_runbooks(*args)
    if cmd == "exported":
        return cmd_exported(*args)
    if cmd == "queries":
        return cmd_queries(*args)
    if cmd == "live-queries":
        return cmd_live_queries(*args)
    if cmd == "live-rules":
        return cmd_live_rules(*args)
    if cmd == "live-alerts":
        return cmd_live_alerts(args[0], args[1:])
    if cmd == "names":
        metrics_path, dashboard, rendered, unexported = args[0], None, None, {}
        rest = iter(args[1:])
        for flag in rest:
            value = next(rest)
            if flag == "--dashboard":
                dashboard = value
            elif flag == "--rules":
                rendered = value
            elif flag == "--unexported-in-alerts":
                name, alert_list = value.split("=", 1)
                unexported[name] = alert_list.split(",")
            else:
                sys.exit(f"unknown option {flag}")
        return cmd_names(metrics_path, dashboard, rendered, unexported)
    sys.exit(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
