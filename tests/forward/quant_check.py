"""What the quantized-weight family tests (int8-families.py, fp8-families.py) check of pippy-batch's records
against HF transformers' logits on the same prompts and greedy paths."""
import numpy as np


def log_softmax(row):
    row = row.astype(np.float64)
    return row - row.max() - np.log(np.exp(row - row.max()).sum())


def distance(o, ids, logits, n):
    """Largest difference of record o's log probabilities (prompt tokens, the first n completion tokens, their top
    lists) from log_softmax of logits [P + n_new, V] along the same tokens."""
    P, worst = len(ids), 0.0
    steps = [(logits[P - 1 + k], e["id"], e) for k, e in enumerate(o["logprobs"][:n])]
    steps += [(logits[k], ids[k + 1], e) for k, e in enumerate(o["prompt_logprobs"][1:])]
    for row, tid, e in steps:
        ref = log_softmax(row)
        top = np.sort(ref)[::-1][:len(e["top_logprobs"])]
        worst = max([worst, abs(e["logprob"] - ref[tid])] +
                    [abs(t["logprob"] - ref[t["id"]]) for t in e["top_logprobs"]] +
                    [abs(t["logprob"] - v) for t, v in zip(e["top_logprobs"], top)])
    return worst


def compare(fam, what, got, prompts, paths, logits, n_new, tie, tol, failures):
    """Each prompt's record in got ({id: record}) against the reference (generate()'s paths, the logits along
    them): greedy tokens equal up to the first near-tie (HF's top-2 margin under tie), log probabilities within
    tol up to there. Returns (tokens compared per prompt, the largest distance)."""
    compared, worst = [], 0.0
    for i, p in enumerate(prompts):
        o = got.get(i, {})
        if len(o.get("logprobs") or []) != n_new or len(o.get("prompt_logprobs") or []) != len(p):
            failures.append(f"{fam}, prompt {i}: a record without its {n_new} logprobs and {len(p)} "
                            f"prompt_logprobs: {str(o)[:400]}")
            compared.append(0)
            continue
        mine = [e["id"] for e in o["logprobs"]]
        k = next((k for k, (a, b) in enumerate(zip(mine, paths[i])) if a != b), None)
        if k is not None:
            top2 = np.sort(logits[i][len(p) - 1 + k])[-2:]
            if top2[1] - top2[0] >= tie:
                failures.append(f"{fam}, prompt {i}: greedy token {k} is {mine[k]}, generate()'s {paths[i][k]} "
                                f"(HF margin {top2[1] - top2[0]:.3g})")
            else:
                print(f"  {fam}, prompt {i}: near-tie at token {k} (margin {top2[1] - top2[0]:.2g}), "
                      "compared up to it")
        compared.append(n_new if k is None else k)
        e = distance(o, p, logits[i], compared[-1])
        worst = max(worst, e)
        if e > tol:
            failures.append(f"{fam}, prompt {i}: log probabilities {e:.3g} from the {what} reference's")
    return compared, worst
