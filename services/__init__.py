"""The suite's gRPC services: one package per service (servicer, server bootstrap, config) and
``services.common`` with what they share (server bootstrap, auth, error mapping, flags)."""
