"""GAN replication of dreams: train a GAN on a set of dreamed photos and sample new ones.

The parts, lowest first:

- :mod:`~dreamsuite.gan.data`: data sets in the artifact store (``datasets/<id>/``, the
  manifest written last) and loading them as tensors;
- :mod:`~dreamsuite.gan.augment`: DiffAugment (colour, translation, cutout), differentiable and
  driven by an explicit random generator;
- :mod:`~dreamsuite.gan.models`: the model registry (``dcgan64``, ``fastgan128``,
  ``fastgan256``), built from :mod:`~dreamsuite.gan.dcgan` and :mod:`~dreamsuite.gan.fastgan`;
- :mod:`~dreamsuite.gan.checkpoint`: atomic checkpoints (object, then the ``latest`` pointer)
  and the job's store keys;
- :mod:`~dreamsuite.gan.loop`: one training step and the state it depends on;
- :mod:`~dreamsuite.gan.job` and :mod:`~dreamsuite.gan.train`: the training job
  (``python -m dreamsuite.gan.train --config FILE.json``; also under torchrun);
- :mod:`~dreamsuite.gan.sample`: sampling a trained generator, one seed per image;
- :mod:`~dreamsuite.gan.features` and :mod:`~dreamsuite.gan.evaluate`: metrics of samples
  against the training and holdout images;
- :mod:`~dreamsuite.gan.dataset`: building data sets through the dream service.

Submodules are imported by name (``from dreamsuite.gan.train import TrainConfig``): importing
this package loads no torch model code.
"""
