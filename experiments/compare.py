"""Compare finished runs: a table of their eval.json results and a plot of one metric.

  python -m experiments.compare --workdirs=runs/rbm_cd1,runs/rbm_pcd --metric=eval/nll \
      --out=rbm_nll.png

Each run is labelled by its workdir's name. Runs without eval.json are listed as unfinished.
"""

import json
import os

from absl import app, flags

from genjax.evaluate import plots

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Comma-separated run directories.")
_METRIC = flags.DEFINE_string("metric", "eval/nll", "metrics.jsonl key to plot against step.")
_OUT = flags.DEFINE_string("out", None, "PNG path for the plot (no plot when unset).")
flags.mark_flag_as_required("workdirs")


def _row(workdir: str) -> str:
    path = os.path.join(workdir, "eval.json")
    if not os.path.exists(path):
        return f"{os.path.basename(workdir):<24} (unfinished: no eval.json)"
    with open(path) as f:
        results = json.load(f)
    if "test_nll_nats" not in results:
        return f"{os.path.basename(workdir):<24} step {results.get('step')}: no test NLL"
    return (
        f"{os.path.basename(workdir):<24} step {results['step']:>7}  "
        f"test NLL {results['test_nll_nats']:8.2f} +/- {results['test_nll_stderr']:.2f} nats  "
        f"({results['nll_estimator']})"
    )


def main(argv):
    del argv
    for workdir in _WORKDIRS.value:
        if not os.path.isdir(workdir):
            raise app.UsageError(f"--workdirs: {workdir!r} is not a directory")
        print(_row(workdir))
    if _OUT.value:
        logs = {
            os.path.basename(w.rstrip("/")): os.path.join(w, "metrics.jsonl")
            for w in _WORKDIRS.value
        }
        plots.save_run_comparison(logs, _METRIC.value, _OUT.value)
        print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
