"""The SSO loss for PyTorch trainers such as TRL's DPOTrainer, which has none of its own.

selfsteer writes the data (`selfsteer export --format trl --out DIR` gives sso_records.jsonl with
instruction, p_system, n_system, chosen, rejected and raw); a trainer scores six sequences per record
with the policy and with the frozen reference (summed log-probabilities of the response tokens, prompt
tokens masked, plus the response token counts) and calls `sso_loss`:

    key           prompt            response
    chosen        x                 y+        (main pair, preferred)
    rejected      x                 y-        (main pair, dispreferred)
    pos_chosen    p+ then x         y+        (steering under the good principles, preferred)
    pos_rejected  p+ then x         y-
    neg_chosen    p- then x         y0        (steering under the bad principles: the raw answer wins)
    neg_rejected  p- then x         y+

In a DPOTrainer subclass this replaces the loss computed from the main pair: build the six sequences
per example in the collator, run the policy (and the reference, under no_grad) over them, and return
`sso_loss(...)[0]`. The formulas are those of selfsteer's objective (docs/algorithm.md):

    B        the base loss of one pair: sigmoid (DPO, sums), ipo (per-token averages), hinge (sums)
    L_main   = B(main)
    L_steer  = G_beta * (B(pos) + B(neg))
    W        = sigmoid(-(alpha * a(x, y+) + (1 - alpha) * a(x, y-)))      a = l / tokens
    L        = L_main + ftx * SFT + W * L_steer                            (mean over records)
    SFT      = -a(x, y+) - G_beta * a(p+ x, y+) - G_beta * a(p- x, y0)
    "w/o G": L = W * (L_main + ftx * SFT_main);  "w/o W": W = 1.

The test in selfsteer (test/integrations-trl.test.ts) checks the loss and its autograd gradient against
`selfsteer objective` on the same numbers.
"""

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

KEYS = ("chosen", "rejected", "pos_chosen", "pos_rejected", "neg_chosen", "neg_rejected")


def base_loss(loss_type: str, beta: float, w, l, ref_w, ref_l, n_w, n_l, label_smoothing: float = 0.0):
    """One pair's loss per record. Inputs are summed log-probs (and token counts) as tensors [B]."""
    if loss_type == "sigmoid":
        u = beta * ((w - l) - (ref_w - ref_l))
        return -(1 - label_smoothing) * F.logsigmoid(u) - label_smoothing * F.logsigmoid(-u)
    if loss_type == "ipo":
        h = (w / n_w - l / n_l) - (ref_w / n_w - ref_l / n_l)
        return (h - 1 / (2 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1 - beta * ((w - l) - (ref_w - ref_l)))
    raise ValueError(f"loss_type {loss_type!r}: expected sigmoid, ipo or hinge")


def sso_loss(
    policy: Dict[str, torch.Tensor],
    reference: Dict[str, torch.Tensor],
    tokens: Dict[str, torch.Tensor],
    loss_type: str = "ipo",
    beta: float = 0.2,
    alpha: float = 0.66,
    steer_beta: float = 0.1,
    use_weight: bool = True,
    use_steer: bool = True,
    ftx: float = 0.0,
    detach_weight: bool = False,
    label_smoothing: float = 0.0,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The batch SSO loss (mean over records) and per-record pieces, from the six sequences' numbers."""
    p, r, n = policy, reference, tokens

    def pair(w: str, l: str):
        return base_loss(loss_type, beta, p[w], p[l], r[w], r[l], n[w], n[l], label_smoothing)

    main = pair("chosen", "rejected")
    weight = torch.ones_like(main)
    if use_weight:
        weight = torch.sigmoid(-(alpha * p["chosen"] / n["chosen"] + (1 - alpha) * p["rejected"] / n["rejected"]))
        if detach_weight:
            weight = weight.detach()
    sft_main = -p["chosen"] / n["chosen"]
    if not use_steer:
        per_record = weight * (main + ftx * sft_main)
        steer = torch.zeros_like(main)
    else:
        steer = steer_beta * (pair("pos_chosen", "pos_rejected") + pair("neg_chosen", "neg_rejected"))
        sft = sft_main - steer_beta * p["pos_chosen"] / n["pos_chosen"] - steer_beta * p["neg_chosen"] / n["neg_chosen"]
        per_record = main + ftx * sft + weight * steer
    return per_record.mean(), {"loss/main": main, "loss/steer": steer, "sso/weight": weight, "loss": per_record}


if __name__ == "__main__":
    # A JSON bridge for tests: reads {"cases": [{"config": {...}, "records": [{policy, reference,
    # tokens}]}]} with selfsteer's key names on stdin and prints one {"loss", "grad"} per case, the
    # gradient being d(loss)/d(policy value) from autograd (0 for values the loss does not read).
    import json
    import sys

    names = {"chosen": "chosen", "rejected": "rejected", "posChosen": "pos_chosen",
             "posRejected": "pos_rejected", "negChosen": "neg_chosen", "negRejected": "neg_rejected"}
    results = []
    for case in json.load(sys.stdin)["cases"]:
        recs = case["records"]

        def column(group: str, key: str, grad: bool = False):
            values = [float(x[group][key]) for x in recs]
            return torch.tensor(values, dtype=torch.float64, requires_grad=grad)

        policy = {names[k]: column("policy", k, True) for k in names}
        reference = {names[k]: column("reference", k) for k in names}
        tokens = {names[k]: column("tokens", k) for k in names}
        loss, _ = sso_loss(policy, reference, tokens, **case["config"])
        loss.backward()

        def grad_of(k: str, i: int) -> float:
            g = policy[names[k]].grad
            return 0.0 if g is None else float(g[i])

        grad = [{k: grad_of(k, i) for k in names} for i in range(len(recs))]
        results.append({"loss": float(loss), "grad": grad})
    json.dump(results, sys.stdout)
