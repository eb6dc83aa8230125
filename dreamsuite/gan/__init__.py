"""GAN replication of dreams: train a GAN on a set of dreamed photos and sample new ones.

The parts, lowest first:

- :mod:`~dreamsuite.gan.data`: data sets in the artifact store (``datasets/<id>/``, the
  manifest written last) and loading them as tensors;
- :mod:`~dreamsuite.gan.augment`: DiffAugment (colour, translation, cutout), differentiable and
  driven by an explicit random generator;
- :mod:`~dreamsuite.gan.models`: the model registry (``dcgan64``, ``fastgan128``,
  ``fastgan256``, ``dream2dream``), built from :mod:`~dreamsuite.gan.dcgan`,
  :mod:`~dreamsuite.gan.fastgan` and :mod:`~dreamsuite.gan.dream2dream`;
- :mod:`~dreamsuite.gan.checkpoint`: atomic checkpoints (object, then the ``latest`` pointer)
  and the job's store keys;
- :mod:`~dreamsuite.gan.loop`: one training step and the state it depends on;
- :mod:`~dreamsuite.gan.job` and :mod:`~dreamsuite.gan.train`: the training job
  (``python -m dreamsuite.gan.train --config FILE.json``; also under torchrun);
- :mod:`~dreamsuite.gan.sample`: sampling a trained generator, one seed per image;
- :mod:`~dreamsuite.gan.features` and :mod:`~dreamsuite.gan.evaluate`: metrics of samples
  against the training and holdout images;
- :mod:`~dreamsuite.gan.dataset`: building data sets through the dream service;
- :mod:`~dreamsuite.gan.dream2dream`, :mod:`~dreamsuite.gan.paired` and
  :mod:`~dreamsuite.gan.perceptual`: the ``dream2dream`` kind, a one-pass image-to-image network
  trained on the (photo, dream) pairs of one or more data sets (one condition each), its
  training step, evaluation and the perceptual distance it is trained and judged with.

Submodules are imported by name (``from dreamsuite.gan.train import TrainConfig``): importing
this package loads no torch model code.
"""
