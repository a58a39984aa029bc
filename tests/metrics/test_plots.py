import json

from tristream.metrics.plots import learning_curve, plt, short_count


def test_count_labels_are_short():
    assert [short_count(x) for x in (0, 950, 12_000, 140_000, 1_500_000, -2_000)] == \
        ["0", "950", "12k", "140k", "1.5M", "-2k"]


def test_learning_curve_ticks_do_not_run_into_each_other(tmp_path, monkeypatch):
    """A run of 300k env steps: at most 7 x ticks, each label a few characters."""
    rows = [{"phase": "train", "step": i, "env_steps_total": 2048 * i, "success": 0.0, "return": float(i)}
            for i in range(1, 148)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = []
    real_savefig = plt.Figure.savefig

    def capture(fig, *a, **k):
        fig.canvas.draw()
        lo, hi = fig.axes[0].get_xlim()
        seen.extend(t.get_text() for t in fig.axes[0].get_xticklabels() if lo <= t.get_position()[0] <= hi)
        return real_savefig(fig, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", capture)
    assert learning_curve(tmp_path).exists()
    assert 2 <= len(seen) <= 7 and all(len(t) <= 5 for t in seen), seen
