"""The guide service: guide weights, neuron selection and activation statistics over gRPC,
computed by an activation backend (TorchServe or in-process)."""
