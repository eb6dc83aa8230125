"""``GanService``: converts requests to library and job-manager calls and results to messages,
nothing else. Errors are library exceptions, mapped to status codes by the common interceptor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from dreamsuite.v1 import gan_pb2, gan_pb2_grpc
from services.gan.convert import (
    dataset_request,
    job_message,
    model_message,
    progress_message,
    publish_request,
    published_message,
    samples_message,
    train_config,
)
from services.gan.datasets import DatasetBuilder
from services.gan.jobs import JobManager
from services.gan.publish import Publisher
from services.gan.sampling import Sampler, seeds_of

__all__ = ["GanServicer", "SERVICE_NAME"]

SERVICE_NAME = gan_pb2.DESCRIPTOR.services_by_name["GanService"].full_name


class GanServicer(gan_pb2_grpc.GanServiceServicer):
    def __init__(self, datasets: DatasetBuilder, jobs: JobManager, sampler: Sampler,
                 check_training, publisher: Publisher):
        self.datasets = datasets
        self.jobs = jobs
        self.sampler = sampler
        self.check_training = check_training  # config -> checked config (dataset, model...)
        self.publisher = publisher

    async def BuildDataset(self, request: gan_pb2.BuildDatasetRequest,
                           context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[gan_pb2.BuildDatasetResponse]:
        async for progress in self.datasets.build(dataset_request(request)):
            uri = ""
            if progress.manifest is not None:
                uri = await asyncio.to_thread(self.datasets.manifest_uri, progress.dataset_id)
            yield progress_message(progress, uri)

    async def StartTraining(self, request: gan_pb2.StartTrainingRequest,
                            context: grpc.aio.ServicerContext) -> gan_pb2.StartTrainingResponse:
        config = await asyncio.to_thread(self.check_training, train_config(request))
        return gan_pb2.StartTrainingResponse(job_id=await self.jobs.start(config))

    async def WatchJob(self, request: gan_pb2.WatchJobRequest,
                       context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[gan_pb2.WatchJobResponse]:
        async for snapshot in self.jobs.watch(request.job_id):
            yield gan_pb2.WatchJobResponse(progress=job_message(snapshot))

    async def CancelJob(self, request: gan_pb2.CancelJobRequest,
                        context: grpc.aio.ServicerContext) -> gan_pb2.CancelJobResponse:
        snapshot = await self.jobs.cancel(request.job_id)
        return gan_pb2.CancelJobResponse(progress=job_message(snapshot))

    async def ListJobs(self, request: gan_pb2.ListJobsRequest,
                       context: grpc.aio.ServicerContext) -> gan_pb2.ListJobsResponse:
        return gan_pb2.ListJobsResponse(jobs=[job_message(j) for j in self.jobs.list()])

    async def ListModels(self, request: gan_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> gan_pb2.ListModelsResponse:
        return gan_pb2.ListModelsResponse(
            models=[model_message(r) for r in await self.sampler.models()])

    async def Sample(self, request: gan_pb2.SampleRequest,
                     context: grpc.aio.ServicerContext) -> gan_pb2.SampleResponse:
        seeds = seeds_of(list(request.seeds), request.seed, request.count)
        truncation = request.truncation if request.HasField("truncation") else None
        samples = await self.sampler.sample(request.model, seeds, truncation)
        return samples_message(samples, inline=request.inline_images)

    async def PublishModel(self, request: gan_pb2.PublishModelRequest,
                           context: grpc.aio.ServicerContext) -> gan_pb2.PublishModelResponse:
        return published_message(await self.publisher.publish(publish_request(request)))
