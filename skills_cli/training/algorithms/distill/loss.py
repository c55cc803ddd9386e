"""On-policy distillation's math: the per-token KL between the student's and the teacher's next-token
distributions at every response position the student sampled, and the loss over the global valid tokens.

All functions are pure torch on tensors, so the unit tests check them against hand-computed values.

Per position t, with s = log softmax(student logits) and q = log softmax(teacher logits) (NeMo-RL
`DistillationLossFn`, raw logits: the sampling temperature only chose which positions are visited):
    reverse  KL(student || teacher) = sum_v exp(s_v) (s_v - q_v)       (default; mode seeking)
    forward  KL(teacher || student) = sum_v exp(q_v) (q_v - s_v)
    mixed    w forward + (1 - w) reverse                                (w = loss_fn.mixed_kl_weight)
Top k (`distillation.topk_logits_k`): the sums run over the teacher's k most likely tokens V_k. The teacher's
top-k logits are renormalized over V_k; the student's logits at V_k are renormalized over V_k too
(`zero_outside_topk=false`), or keep their full-vocabulary log-probabilities (`true`): the teacher is then
taken as ~0 (log e^-100) outside V_k, which adds to the reverse KL the student's mass there,
sum_{v not in V_k} exp(s_v) (s_v + 100). With k = the vocabulary size both equal the full KL.

The loss sums the per-token KL over the micro-batch's valid response tokens and divides by the valid-token count
of the whole optimizer batch over all data-parallel ranks, so micro-batch losses add up to the global token mean
whatever the micro-batch size, packing or data-parallel layout.
"""

from __future__ import annotations

LOG_OUTSIDE_TOPK = -100.0  # the teacher's log-probability outside its top k with zero_outside_topk (NeMo-RL's)


def teacher_topk(logits, k: int):
    """The teacher's k largest logits at each position and their token ids (k capped at the vocabulary)."""
    return logits.topk(min(k, logits.shape[-1]), dim=-1)


def per_token_kl(student_logits, teacher_logits, teacher_indices=None, kl_type: str = "reverse",
                 mixed_kl_weight: float = 0.5, zero_outside_topk: bool = False):  # fmt: skip
    """The KL at each position, float32 of the logits' shape without the last dimension.

    `teacher_logits` is over the whole vocabulary when `teacher_indices` is None, else the teacher's top-k logits
    with their token ids `teacher_indices` (same shape)."""
    import torch

    log_softmax = torch.nn.functional.log_softmax
    student, teacher = student_logits.float(), teacher_logits.float()
    teacher_lp, tail = log_softmax(teacher, dim=-1), None
    if teacher_indices is None:
        student_lp = log_softmax(student, dim=-1)
    elif zero_outside_topk:
        full = log_softmax(student, dim=-1)
        student_lp = full.gather(-1, teacher_indices)
        if kl_type != "forward":
            tail = outside_topk_term(full, student_lp)
    else:
        student_lp = log_softmax(student.gather(-1, teacher_indices), dim=-1)

    def forward():
        return (teacher_lp.exp() * (teacher_lp - student_lp)).sum(-1)

    def reverse():
        inside = (student_lp.exp() * (student_lp - teacher_lp)).sum(-1)
        return inside if tail is None else inside + tail

    if kl_type == "forward":
        return forward()
    if kl_type == "reverse":
        return reverse()
    if kl_type == "mixed":
        return mixed_kl_weight * forward() + (1.0 - mixed_kl_weight) * reverse()
    raise ValueError(f"unknown kl_type {kl_type!r} (forward, reverse or mixed)")


def outside_topk_term(full_logprobs, topk_logprobs):
    """sum over tokens outside the top k of exp(s_v) (s_v - LOG_OUTSIDE_TOPK): the reverse KL's share there."""
    probs_topk = topk_logprobs.exp()
    plogp_rest = (full_logprobs.exp() * full_logprobs).sum(-1) - (probs_topk * topk_logprobs).sum(-1)
    mass_rest = 1.0 - probs_topk.sum(-1)
    return plogp_rest - LOG_OUTSIDE_TOPK * mass_rest


def distillation_loss(kl, mask, global_count: float):
    """This micro-batch's share of the optimizer batch's loss and its sums over valid tokens (0-dim tensors, read
    back once per step): `kl` per position, `mask` 1 on the response tokens that train, `global_count` the valid
    tokens of the optimizer batch over all ranks."""
    mask = mask.float()
    total = (kl * mask).sum()
    return total / max(global_count, 1.0), {"kl": total.detach(), "num_tokens": mask.sum()}
