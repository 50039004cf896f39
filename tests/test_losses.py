import torch
import torch.nn.functional as F

from segnas.engine.losses import OhemCrossEntropy, SegmentationLoss, kd_loss


def make(seed=0, n=2, c=5, h=8, w=9):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g) * 2
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[:, 0, :] = 255
    return logits, target


def test_ohem_keeps_everything_when_threshold_is_one_or_min_kept_large():
    logits, target = make()
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(OhemCrossEntropy(thresh=1.0, min_kept=1)(logits, target), ce)
    assert torch.allclose(OhemCrossEntropy(thresh=1e-6, min_kept=10**6)(logits, target), ce)


def test_ohem_averages_only_hard_pixels():
    logits, target = make(1)
    pix = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[target != 255]
    thresh = 0.5
    hard = pix[pix > -torch.log(torch.tensor(thresh))]
    assert 0 < hard.numel() < pix.numel()
    loss = OhemCrossEntropy(thresh=thresh, min_kept=1)(logits, target)
    assert torch.allclose(loss, hard.mean())
    assert loss > pix.mean()  # hard examples weigh more than the plain mean


def test_ohem_min_kept_takes_hardest():
    logits, target = make(2)
    pix = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[target != 255]
    loss = OhemCrossEntropy(thresh=1e-9, min_kept=5)(logits, target)  # nothing passes the threshold
    assert torch.allclose(loss, pix.topk(5).values.mean())


def test_kd_zero_for_identical_and_positive_otherwise():
    s, target = make(3)
    assert kd_loss(s, s.clone(), 2.0, target).abs() < 1e-6
    t, _ = make(4)
    assert kd_loss(s, t, 1.0, target) > 0


def test_kd_ignores_ignored_pixels_and_gradient_moves_student_to_teacher():
    s, target = make(5)
    t, _ = make(6)
    all_ignored = torch.full_like(target, 255)
    assert kd_loss(s, t, 1.0, all_ignored) == 0
    s = s.clone().requires_grad_(True)
    before = kd_loss(s, t, 2.0, target)
    before.backward()
    with torch.no_grad():
        after = kd_loss(s - 0.5 * s.grad, t, 2.0, target)
    assert after < before


def test_kd_matches_kl_div_with_temperature():
    s, _ = make(7)
    t, _ = make(8)
    T = 3.0
    ref = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="none").sum(1).mean() * T * T
    assert torch.allclose(kd_loss(s, t, T), ref, atol=1e-6)


def test_segmentation_loss_combines_aux_and_kd():
    logits, target = make(9)
    aux = logits.flip(1)
    crit = SegmentationLoss("ce", aux_weight=0.4, kd_weight=0.5, kd_temperature=1.0)
    total, parts = crit({"out": logits, "aux": [aux]}, target, teacher_logits=aux)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    expected = ce + 0.4 * F.cross_entropy(aux, target, ignore_index=255) + 0.5 * kd_loss(logits, aux, 1.0, target)
    assert torch.allclose(total, expected, atol=1e-6)
    assert set(parts) == {"seg", "aux0", "kd"}


def test_boundary_targets_mark_label_edges_only():
    from segnas.engine.losses import boundary_targets, detail_loss

    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[:, :, 8:] = 3
    gt = boundary_targets(target)
    assert gt.shape == (1, 1, 16, 16)
    assert gt[0, 0, :, 7:9].sum() > 0  # the vertical class border
    assert gt[0, 0, :, :5].sum() == 0 and gt[0, 0, :, 12:].sum() == 0  # flat regions
    good = (gt * 20 - 10).requires_grad_(True)
    assert detail_loss(good, target) < detail_loss(torch.zeros_like(good), target)


def test_ohem_with_class_weights_is_a_weighted_mean_of_the_hard_pixels():
    logits, target = make(10)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])
    loss = OhemCrossEntropy(thresh=1.0, min_kept=1, weight=weight)(logits, target)  # keeps every pixel
    assert torch.allclose(loss, F.cross_entropy(logits, target, weight=weight, ignore_index=255))


def smoothed_ce_by_definition(logits, target, eps, ignore=255):
    """Per-pixel CE against the target (1 - ε) one-hot + ε / C uniform, ignored pixels dropped."""
    c = logits.shape[1]
    logp = F.log_softmax(logits.float(), 1).permute(0, 2, 3, 1).reshape(-1, c)
    t = target.flatten()
    keep = t != ignore
    logp, t = logp[keep], t[keep]
    q = torch.full_like(logp, eps / c)
    q[torch.arange(len(t)), t] += 1 - eps
    return -(q * logp).sum(1)


def test_label_smoothing_ce_and_ohem_follow_the_definition():
    torch.manual_seed(3)
    logits, target = torch.randn(2, 5, 6, 7), torch.randint(0, 5, (2, 6, 7))
    target[0, 0] = 255
    eps = 0.1
    per_pixel = smoothed_ce_by_definition(logits, target, eps)
    ce = SegmentationLoss("ce", aux_weight=0.0, label_smoothing=eps)(logits, target)[0]
    assert torch.allclose(ce, per_pixel.mean(), atol=1e-6)
    # OHEM: the hard pixels are those of the plain loss; the smoothed loss is averaged over them
    plain = F.cross_entropy(logits, target, ignore_index=255, reduction="none").flatten()
    plain = plain[target.flatten() != 255]
    hard = plain > -torch.log(torch.tensor(0.5))
    ohem = OhemCrossEntropy(thresh=0.5, min_kept=1, label_smoothing=eps)(logits, target)
    assert 0 < int(hard.sum()) < len(plain) and torch.allclose(ohem, per_pixel[hard].mean(), atol=1e-6)
    assert torch.allclose(OhemCrossEntropy(0.5, 1)(logits, target), plain[hard].mean(), atol=1e-6)


def test_the_boundary_term_is_the_cross_entropy_of_the_pixels_on_a_label_edge():
    torch.manual_seed(4)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1  # one vertical edge between columns 3 and 4
    target[:, 0, 0] = 255
    logits = torch.randn(1, 3, 8, 8, requires_grad=True)
    loss, parts = SegmentationLoss("ce", aux_weight=0.0, boundary_weight=2.0)(logits, target)
    pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    # by definition: the labelled pixels next to a pixel of another class (here columns 3 and 4;
    # the ignored pixel makes no edge)
    edge = torch.zeros(1, 8, 8, dtype=torch.bool)
    edge[:, :, 3:5] = True
    assert abs(parts["boundary"] - 2.0 * float(pixel[edge].mean().detach())) < 1e-5
    assert torch.allclose(loss, F.cross_entropy(logits, target, ignore_index=255) + 2.0 * pixel[edge].mean())
    # a label map without an edge adds nothing; off by default
    flat = torch.zeros(1, 8, 8, dtype=torch.long)
    assert SegmentationLoss("ce", aux_weight=0.0, boundary_weight=1.0)(logits, flat)[1]["boundary"] == 0.0
    assert "boundary" not in SegmentationLoss("ce", aux_weight=0.0)(logits, target)[1]


def test_ohem_keeping_every_pixel_is_the_weighted_smoothed_cross_entropy_the_aux_heads_use():
    logits, target = make(seed=4)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])
    for w in (None, weight):
        for eps in (0.0, 0.1):
            ohem = OhemCrossEntropy(thresh=1.0, min_kept=1, weight=w, label_smoothing=eps)(logits, target)
            ce = F.cross_entropy(logits, target, weight=w, ignore_index=255, label_smoothing=eps)
            assert torch.allclose(ohem, ce, atol=1e-5), (w, eps)
