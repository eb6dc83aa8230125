"""Generated code for TorchServe's inference API (make protos). Do not edit."""
