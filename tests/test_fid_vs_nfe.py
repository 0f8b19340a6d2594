"""benchmarks/fid_vs_nfe.py's claim rule: the NFE ratio to standard T = 1's best FID, and dominance
at matched NFE, which still says something when that best lies at the cheapest budget."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fid_vs_nfe import BUDGETS, claim, steps_for  # noqa: E402


def rows(T, prior, fids, nfes=(3, 5, 10, 20)):
    return [{"sampler": "heun", "T": T, "prior": prior, "nfe": n, "fid": f} for n, f in zip(nfes, fids)]


def test_ten_times_better_at_every_budget_is_dominance_even_when_the_ratio_cannot_be_measured():
    """Standard T = 1's best FID is at its cheapest budget (it gets worse with more steps): the
    ratio is 1 by construction, while ours is 10x lower at every budget."""
    v = claim(rows(1.0, "noise", (335, 400, 500, 553)) + rows(0.4, "aux:glow", (33.5, 31, 30, 30)))["heun"]
    assert v["nfe_ratio"] == 1.0 and not v["holds"]
    assert v["dominates"] and v["min_factor"] > 9.9 and [r["nfe"] for r in v["matched"]] == [3, 5, 10, 20]


def test_a_claim_that_holds_by_the_ratio_and_a_crossing_that_is_no_dominance():
    v = claim(rows(1.0, "noise", (900, 400, 100, 20)) + rows(0.4, "aux:glow", (300, 19, 18, 18)))["heun"]
    assert v["standard_nfe"] == 20 and v["ours_nfe"] == 5 and v["nfe_ratio"] == 0.25 and v["holds"] and v["dominates"]
    v = claim(rows(1.0, "noise", (900, 400, 100, 20)) + rows(0.4, "aux:glow", (300, 500, 50, 25)))["heun"]
    assert not v["dominates"] and v["min_factor"] == 0.8 and v["ours_nfe"] is None


def test_the_budgets_go_down_to_three_evaluations_and_steps_never_overspend():
    assert min(BUDGETS) == 3 and 5 in BUDGETS
    assert [steps_for("heun", n) for n in (3, 5, 10)] == [1, 2, 4] and steps_for("dpm2m", 3) == 2
