"""Client of the GAN service: calls only, returning messages or raising library errors.

>>> with GanClient("127.0.0.1:50053") as gan:
...     for p in gan.build_dataset(gan_pb2.BuildDatasetRequest(...)): print(p.done, p.total)
...     job = gan.start_training(gan_pb2.StartTrainingRequest(dataset=p.dataset_id, steps=500))
...     for progress in gan.watch(job): print(progress.step, progress.state)
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from dreamsuite.clients import auth_metadata, open_channel
from dreamsuite.v1 import gan_pb2, gan_pb2_grpc
from dreamsuite.wire.status import error_from_rpc

__all__ = ["GanClient"]


class GanClient:
    """A blocking client of ``GanService`` (TLS and token as :func:`open_channel` does)."""

    def __init__(self, target: str, *, token: str | None = None, tls_ca: str | None = None,
                 timeout: float | None = 300.0):
        self.target = target
        self.timeout = timeout
        self.channel = open_channel(target, tls_ca=tls_ca)
        self.stub = gan_pb2_grpc.GanServiceStub(self.channel)
        self.metadata = auth_metadata(token)

    def _unary(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"GAN service at {self.target}") from None

    def _stream(self, method, request, timeout: float | None) -> Iterator:
        call = method(request, timeout=timeout, metadata=self.metadata)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"GAN service at {self.target}") from None
        finally:
            call.cancel()

    def build_dataset(self, request: gan_pb2.BuildDatasetRequest, *,
                      timeout: float | None = None) -> Iterator[gan_pb2.BuildDatasetResponse]:
        return self._stream(self.stub.BuildDataset, request, timeout)

    def start_training(self, request: gan_pb2.StartTrainingRequest) -> str:
        return self._unary(self.stub.StartTraining, request).job_id

    def watch(self, job_id: str, *, timeout: float | None = None
              ) -> Iterator[gan_pb2.TrainProgress]:
        for response in self._stream(self.stub.WatchJob, gan_pb2.WatchJobRequest(job_id=job_id),
                                     timeout):
            yield response.progress

    def cancel(self, job_id: str) -> gan_pb2.TrainProgress:
        return self._unary(self.stub.CancelJob, gan_pb2.CancelJobRequest(job_id=job_id)).progress

    def jobs(self) -> list[gan_pb2.TrainProgress]:
        return list(self._unary(self.stub.ListJobs, gan_pb2.ListJobsRequest()).jobs)

    def models(self) -> list[gan_pb2.ModelInfo]:
        return list(self._unary(self.stub.ListModels, gan_pb2.ListModelsRequest()).models)

    def sample(self, request: gan_pb2.SampleRequest) -> gan_pb2.SampleResponse:
        return self._unary(self.stub.Sample, request)

    def publish(self, request: gan_pb2.PublishModelRequest, *,
                timeout: float | None = None) -> gan_pb2.PublishModelResponse:
        return self._unary(self.stub.PublishModel, request, timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
