"""Search strategies on one core: the contracts and registry (``base``), the one-shot engine
(``oneshot``: FasterSeg, SSR), the ask/tell loop (``asktell``: SasWOT, random) and one file per
method (``strategies``)."""
