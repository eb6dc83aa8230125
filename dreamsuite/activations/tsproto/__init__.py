"""Generated code for TorchServe's inference API (see ../protogen.py). Do not edit."""
