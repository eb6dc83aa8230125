"""The dream service: ``DreamService`` over gRPC on top of :mod:`dreamsuite.engine.dream`.

servicer (proto <-> library) -> runner (device worker, bounded queue) -> outputs (previews,
artifacts); server bootstrap in :mod:`services.dream.server`, flags in
:mod:`services.dream.config`.
"""
