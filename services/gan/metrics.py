"""The ``gan_*`` metric families of the GAN service (on a registry the server owns)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.common.telemetry import HANDLING_BUCKETS

__all__ = ["GanMetrics"]


class GanMetrics:
    """Jobs started, refused, restarted and finished; data-set images; sampling time."""

    def __init__(self, registry: CollectorRegistry):
        self.started = Counter("gan_jobs_started_total", "Training jobs started.",
                               registry=registry)
        self.rejected = Counter("gan_jobs_rejected_total",
                                "Training jobs refused: too many running.", registry=registry)
        self.restarts = Counter("gan_job_restarts_total",
                                "Trainers restarted from their latest checkpoint after dying.",
                                registry=registry)
        self.finished = Counter("gan_jobs_finished_total", "Training jobs that ended, by state.",
                                ["state"], registry=registry)
        self.dataset_images = Counter("gan_dataset_images_total",
                                      "Data-set images dreamed, by outcome.", ["outcome"],
                                      registry=registry)
        self.sample_seconds = Histogram("gan_sample_seconds", "Time of one Sample call.",
                                        buckets=HANDLING_BUCKETS, registry=registry)
        self.samples = Counter("gan_samples_total", "Images sampled.", registry=registry)
        self.publications = Counter(
            "gan_publications_total", "PublishModel calls, by outcome (ok; partial: some "
            "TorchServe replicas serve the new version, others failed; error: none serves it; "
            "refused: a bad request, an unknown model or no management API configured).",
            ["outcome"], registry=registry)
        self.publish_seconds = Histogram("gan_publish_seconds",
                                         "Time of one PublishModel call (archive, registration "
                                         "on every replica, old versions retired).",
                                         buckets=HANDLING_BUCKETS, registry=registry)
        self.resync_registrations = Counter(
            "gan_resync_registrations_total", "Published models registered again on a TorchServe "
            "replica that lacked them or served another version (a restarted or new replica).",
            registry=registry)
