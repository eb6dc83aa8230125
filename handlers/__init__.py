"""TorchServe handlers; ``dreamsuite archive`` packs them into model archives."""
