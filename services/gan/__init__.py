"""The GAN service: dreamed data sets (through the dream service), GAN training jobs in their
own processes (or Kubernetes Jobs), checkpoints in the artifact store, sampling by seed.

servicer (proto <-> library) -> datasets (build through DreamService), jobs (JobManager over a
launcher: local processes or Kubernetes Jobs), sampler (generators loaded from checkpoints);
bootstrap in :mod:`services.gan.server`, flags in :mod:`services.gan.config`.
"""
