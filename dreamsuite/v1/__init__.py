"""Generated protobuf and gRPC code for dreamsuite.v1 (make protos). Do not edit."""
