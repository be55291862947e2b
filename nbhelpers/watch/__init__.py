"""The watch: invariants of correct training, checked on the learner's own loop while it runs.

The checks (:mod:`nbhelpers.checks`) look at the objects before training; most real bugs live
in the learner's own loop, resume and evaluation code, which they never see. The watch attaches
to the model, the optimizer and the loss with one line and changes nothing in the loop::

    from nbhelpers.watch import watch

    with watch(model, optimizer, train_loader=train_loader, eval_loaders={"valid": valid_loader}) as w:
        for epoch in range(EPOCHS):
            ...  # the learner's own loop, evaluation and scheduler code, unchanged
    w.report()  # one row per invariant: PASS / FAIL (evidence, hint) / N/A

Each fault is reported once, by name, with its numbers and a one-line hint, when it is first
seen. The invariants (``INVARIANTS``, in ``invariants``):

- ``zero_grad``: every step starts from reset gradients (``.grad`` no longer holds the
  previous step's gradient when the next backward begins);
- ``accumulation``: a step that sums several micro-batch losses divides them (the gradient is
  the mean over its examples, not k times it);
- ``gradients``: the gradient a step uses exists, is finite and is not exactly 0;
- ``optimizer_params``: each step changes the model's parameters;
- ``lr_collapse``: the learning rate does not fall to a thousandth of its peak and stay there
  (a warm-up that multiplies the current learning rate, a per-epoch schedule stepped per batch);
- ``lr_jump``: it does not change 100-fold between two steps (after resuming, too);
- ``model_modes``: training forward passes in train mode, evaluation ones in eval mode (with
  BatchNorm or Dropout);
- ``softmax_output`` / ``nonnegative_logits``: the training loss gets logits that can be
  negative (no softmax, no ReLU on them);
- ``eval_loss``: evaluation gives the loss what training gives it (no softmax in evaluation
  only): the loss is recomputed on the same batch;
- ``eval_memory``: evaluation keeps no autograd graphs from batch to batch;
- ``split_seed``: the splits can be drawn again (seeded, and the same as in earlier runs);
- ``shared_transform``: train and evaluation do not share one dataset object whose transform
  one of them changed.

Given the loaders, the watch also runs, when the block starts, the checks of the data that
need no training (``core.DATA_CHECKS``), so one line covers what ``run_all_checks`` would
say about the data too.

``core`` holds :class:`Watch` (``watch`` is the same class: the hooks and what they record), ``store`` what is kept between
runs (``watch.json`` in the runs folder). The words of each fault and its hint are the checks'
(:data:`nbhelpers.checks.HINTS`).
"""

from .core import LOSSES, Watch, watch
from .invariants import INVARIANTS, Invariant
