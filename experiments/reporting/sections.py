"""The report's sections beyond the per-study tables: template robustness, out of distribution vs
in distribution, and provenance (commands, commits, models, data and episodes behind every row)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .compare import paired, pct
from .describe import config_text, describe, order_key
from .entries import Entry
from .tables import table


def template_section(entries: list[Entry]) -> list[str]:
    """Mean and standard deviation across templates, for rows that differ only by template."""
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        d = describe(e)
        key = (e.dataset, e.k_shot, e.results.get("model"), tuple((k, v) for k, v in d.items() if k != "template"))
        groups.setdefault(key, []).append(e)
    rows = []
    for (dataset, k, _model, _), members in groups.items():
        templates = {describe(m)["template"] for m in members}
        if len(templates) < 2:
            continue
        members = sorted(members, key=lambda m: describe(m)["template"])

        def stats(init: str) -> tuple[str, list[float]]:
            accs = [m.row(init)["accuracy_mean"] for m in members if m.row(init)]
            if len(accs) < 2:
                return "–", accs
            return f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f}", accs

        pre_text, pre = stats("pretrained")
        meta_text, meta = stats("meta")
        per = "; ".join(f"{describe(m)['template']}: " + " → ".join(pct(m.row(i)["accuracy_mean"]) for i in
                                                                    ("pretrained", "meta") if m.row(i))
                        for m in members)
        gain = "–"
        if len(pre) == len(meta) == len(members) >= 2:
            deltas = [b - a for a, b in zip(pre, meta)]
            gain = f"{100 * statistics.mean(deltas):+.1f} ± {100 * statistics.stdev(deltas):.1f}"
        keys = [x for x in describe(members[0]) if x != "template"]
        rows.append([dataset, f"{k}-shot", config_text(members[0], keys),
                     str(len(members)), pre_text, meta_text, gain, per])
    if not rows:
        return []
    return ["", "**Template robustness** (mean ± standard deviation across templates of the per-template mean "
            "accuracy; per template: pretrained → meta-learned):", "",
            *table(["data set", "shot", "config", "templates", "pretrained init", "meta-learned init",
                     "Δ meta − pretrained", "per template"], rows)]


def _signature(e: Entry) -> tuple:
    d = describe(e)
    d.pop("meta-trained on", None)
    return (e.results.get("model"), e.block, tuple(sorted(d.items())))


def ood_section(entries: list[Entry], everything: list[Entry]) -> list[str]:
    """Each out-of-distribution row against the in-distribution init of the same config on the
    same test episodes (found among all the reported results)."""
    rows = []
    for e in entries:
        if not e.out_of_distribution:
            continue
        meta = e.row("meta")
        match = next((o for o in everything if not o.out_of_distribution and o.row("meta")
                      and _signature(o) == _signature(e)), None)
        if match is None:
            rows.append([e.dataset, f"{e.k_shot}-shot", str(e.results.get("meta_train_dataset")),
                         pct(meta["accuracy_mean"], meta["accuracy_ci95"]) if meta else "–", "(none reported)",
                         "–"])
            continue
        inn = match.row("meta")
        d = paired(meta, inn)
        rows.append([e.dataset, f"{e.k_shot}-shot", str(e.results.get("meta_train_dataset")),
                     pct(meta["accuracy_mean"], meta["accuracy_ci95"]) if meta else "–",
                     f"{pct(inn['accuracy_mean'], inn['accuracy_ci95'])} (`{match.study}/{match.cell}`)",
                     pct(d["mean"], d["ci"], signed=True) if d else "–"])
    if not rows:
        return []
    return ["", "**Out of distribution vs in distribution** (meta-learned init on the same test episodes; paired "
            "Δ = out-of-distribution − in-distribution):", "",
            *table(["test data", "shot", "meta-trained on", "meta-learned init (OOD)",
                     "meta-learned init (in distribution)", "paired Δ (pts)"], rows)]



def provenance_section(entries: list[Entry], out_dir: Path) -> list[str]:
    lines = ["## Provenance", "",
             "Every row above comes from one results JSON. Commands are as run (the training command from the "
             "run's `run.json`, the evaluation command from the results' `provenance`).", ""]
    rows = []
    for e in sorted(entries, key=lambda x: (x.study, order_key(x))):
        r = e.results
        train_cmd = (e.run_info or {}).get("command")
        eval_cmd = (r.get("provenance") or {}).get("command", "–")
        try:
            where = e.path.resolve().relative_to(out_dir.resolve())
        except ValueError:
            where = e.path
        copied = f" (copied from `{r['copied_from']}`)" if r.get("copied_from") else \
            (f" (init of `{r['init_from']}`)" if r.get("init_from") else "")
        if e.pretrained_from:
            copied += f"; pretrained init: `{e.pretrained_from}`"
        if e.reference_from:
            copied += f"; reference: `{e.reference_from}`"
        rows.append([f"{e.study}/{e.cell}", f"`{where}`{copied}", f"`{train_cmd}`" if train_cmd else "–",
                     f"`{eval_cmd}`", f"`{str(r.get('commit', '?'))[:12]}`", str(r.get("model", "?")),
                     f"`{str(r.get('data_sha256', '?'))[:12]}`", f"`{str(r.get('episodes_sha256', '?'))[:12]}`"])
    lines += table(["cell", "results file", "train command", "eval command", "commit", "model", "data sha256",
                     "episodes sha256"], rows)
    data = {}
    for e in entries:
        r = e.results
        data.setdefault((e.dataset, r.get("data_sha256")), set()).add(
            (r.get("n_way"), e.k_shot, r.get("n_query"), r.get("n_episodes"), r.get("episodes_seed"),
             r.get("episodes_sha256")))
    lines += ["", "**Data and test episodes** (full sha256):", ""]
    drows = []
    for (dataset, sha), episode_sets in sorted(data.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        for n_way, k, q, n, seed, esha in sorted(episode_sets, key=lambda t: tuple(str(x) for x in t)):
            drows.append([dataset, f"`{sha}`", f"{n_way}-way {k}-shot, {q} queries/class", str(n), str(seed),
                          f"`{esha}`"])
    lines += table(["data set", "data sha256", "episodes", "count", "seed", "episodes sha256"], drows)
    commits = sorted({str(e.results.get("commit", "?")) for e in entries})
    models = sorted({str(e.results.get("model", "?")) for e in entries})
    versions = sorted({json.dumps({k: v for k, v in ((e.results.get("provenance") or {}).get("versions") or {}).items()
                                   if k in ("python", "torch", "transformers", "metaprompt")}, sort_keys=True)
                       for e in entries})
    machines = sorted({json.dumps(((e.results.get("provenance") or {}).get("machine") or {}), sort_keys=True)
                       for e in entries})
    lines += ["", f"- Commits: {', '.join(f'`{c}`' for c in commits)}" +
              (" (some with local changes: `+dirty`)" if any(c.endswith("+dirty") for c in commits) else ""),
              f"- Models: {', '.join(models)}",
              f"- Package versions: {'; '.join(versions)}",
              f"- Machines: {'; '.join(machines)}"]
    return lines
